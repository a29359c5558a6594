"""The dataset format, shared by training, evaluation, review and outside checks.

::

    DATASET/dataset.yaml    name, views (list of view names), depth_units_mm (float), notes
    DATASET/items.jsonl     one JSON object per line, one per item:
      {"id", "sku", "split": train|val|test, "label": ok|damaged,
       "damage": [subset of DAMAGE_TYPES] ([] when ok), "printed_damage": bool,
       "views": {VIEW: {"rgb": path, "depth": path|null, "mask": path|null}},
       optional "damage_size_mm": {KIND: {NAME: number >= 0}}}
      damage_size_mm (optional; absent = unknown) gives the size of each damage kind of the item,
      every KIND one of its "damage": e.g. {"hole": {"diameter": 6.3}}. The simulator writes hole
      diameter, tear width and length, crush radius and depth, spill radius, deconstruction
      contents_radius (the largest escaped piece) and broken_set units_missing (a count); `rig eval`
      reports the recall on holes under SMALL_HOLE_MM (models/metrics.py) from it.
    DATASET/references/SKU/*.png    pristine references of that product (any view); a reference
                                    NAME.png may carry depth next to it as NAME_depth.png
                                    (16-bit, depth_units_mm, aligned to the colour image)

RGB is 8-bit PNG, depth 16-bit PNG in depth_units_mm (0 = no data), mask 8-bit
PNG (255 = damaged pixel). Paths are relative to DATASET.

A view may be the trigger's crop around the item (as the rig stores it) or a whole
camera image: models trained with reframing (the card's ``input.reframe``) cut a view
much larger than its item to the trigger's crop (rig/preprocess/framing.py) through
:meth:`Dataset.set_framing`; maps are written back at the stored image's size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import yaml

from .foundation.errors import DatasetError
from .foundation.yamlpos import load_with_lines  # bounded aliases, duplicate keys refused
from .preprocess.framing import Window, window_for

DAMAGE_TYPES = ("crush", "tear", "hole", "deconstruction", "spill", "broken_set")
SPLITS = ("train", "val", "test")
LABELS = ("ok", "damaged")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
DEPTH_SUFFIX = "_depth"  # references/SKU/NAME_depth.png: the depth of reference NAME.png


def reference_depth_path(image: str | Path) -> Path | None:
    """The depth file that goes with a reference image (NAME_depth.png), or None."""
    p = Path(image)
    cand = p.with_name(p.stem + DEPTH_SUFFIX + ".png")
    return cand if cand.is_file() else None


@dataclass
class ViewPaths:
    rgb: str
    depth: str | None = None
    mask: str | None = None


@dataclass
class Item:
    id: str
    sku: str
    split: str
    label: str
    damage: list[str]
    printed_damage: bool
    views: dict[str, ViewPaths]
    # {kind: {name: mm}} for kinds in ``damage``; empty = not recorded (every dataset before it)
    damage_size_mm: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def damaged(self) -> bool:
        return self.label == "damaged"

    def to_json(self) -> dict:
        obj = {"id": self.id, "sku": self.sku, "split": self.split, "label": self.label,
               "damage": list(self.damage), "printed_damage": bool(self.printed_damage),
               "views": {v: {"rgb": p.rgb, "depth": p.depth, "mask": p.mask}
                         for v, p in self.views.items()}}
        if self.damage_size_mm:  # only when recorded: an older dataset re-exports byte for byte
            obj["damage_size_mm"] = {k: dict(v) for k, v in self.damage_size_mm.items()}
        return obj


@dataclass
class Dataset:
    root: Path
    name: str
    views: list[str]
    depth_units_mm: float
    notes: str
    items: list[Item]
    references: dict[str, list[Path]] = field(default_factory=dict)
    # reframing (rig/preprocess/framing.py): None = views as stored; {"pad", "below"} = a view much
    # larger than its item is cut to the trigger's crop by load_rgb / load_depth_mm / load_mask
    framing: dict | None = None
    _windows: dict = field(default_factory=dict, repr=False)

    def set_framing(self, framing: dict | None) -> None:
        """Frame views as a model's card says (``input.reframe``; None: as stored)."""
        self.framing = dict(framing) if framing else None
        self._windows = {}

    def window(self, item: Item, view: str, rgb: np.ndarray | None = None) -> Window | None:
        """The crop of the stored view that the loaders return (None: the whole view); ``rgb``:
        the stored colour image when the caller has read it already (it is not read again)."""
        if not self.framing:
            return None
        key = (item.id, view)
        if key not in self._windows:
            rgb = self._read_rgb(item, view) if rgb is None else rgb
            self._windows[key] = window_for(rgb, self._read_depth(item, view), self.framing)
        return self._windows[key]

    def split(self, split: str) -> list[Item]:
        return [it for it in self.items if it.split == split]

    @property
    def skus(self) -> list[str]:
        return sorted({it.sku for it in self.items} | set(self.references))

    def path(self, rel: str | None) -> Path | None:
        return None if rel is None else self.root / rel

    def load_rgb(self, item: Item, view: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8 in RGB order (the framed crop when framing is set)."""
        rgb = self._read_rgb(item, view)
        w = self.window(item, view, rgb)
        return rgb if w is None else w.cut(rgb)

    def load_depth_mm(self, item: Item, view: str) -> np.ndarray | None:
        """Depth in millimetres as float32 (0 = no data), or None when the view has none."""
        return self._cut(item, view, self._read_depth(item, view))

    def load_mask(self, item: Item, view: str, framed: bool = True) -> np.ndarray | None:
        """The damage mask (255 = damaged), framed like the view unless ``framed`` is False."""
        m = self._read_mask(item, view)
        return self._cut(item, view, m) if framed else m

    def _cut(self, item: Item, view: str, img):
        w = self.window(item, view) if img is not None else None
        return img if w is None else w.cut(img)

    def _read_rgb(self, item: Item, view: str) -> np.ndarray:
        vp = self._view(item, view)
        img = cv2.imread(str(self.root / vp.rgb), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"item {item.id!r} view {view!r}: cannot read image {self.root / vp.rgb}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _read_depth(self, item: Item, view: str) -> np.ndarray | None:
        vp = self._view(item, view)
        if vp.depth is None:
            return None
        d = cv2.imread(str(self.root / vp.depth), cv2.IMREAD_UNCHANGED)
        if d is None or d.dtype != np.uint16 or d.ndim != 2:
            raise DatasetError(f"item {item.id!r} view {view!r}: depth {self.root / vp.depth} "
                               "is missing or not a single-channel 16-bit PNG")
        return d.astype(np.float32) * np.float32(self.depth_units_mm)

    def _read_mask(self, item: Item, view: str) -> np.ndarray | None:
        vp = self._view(item, view)
        if vp.mask is None:
            return None
        m = cv2.imread(str(self.root / vp.mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise DatasetError(f"item {item.id!r} view {view!r}: cannot read mask {self.root / vp.mask}")
        return m

    def _view(self, item: Item, view: str) -> ViewPaths:
        try:
            return item.views[view]
        except KeyError:
            raise DatasetError(f"item {item.id!r} has no view {view!r} (has {sorted(item.views)})") from None


def _fail(where: str, msg: str):
    raise DatasetError(f"{where}: {msg}")


def _relative_path(rel: str, where: str, what: str) -> str:
    """A dataset path stays inside the dataset: relative, no '..', no NUL."""
    p = PurePosixPath(rel.replace("\\", "/"))
    if not rel or "\0" in rel or p.is_absolute() or ".." in p.parts or (len(rel) > 1 and rel[1] == ":"):
        _fail(where, f"{what}: path {rel!r} must be relative to the dataset folder, without '..'")
    return rel


#: the longest items.jsonl line accepted (a real one is a few hundred bytes)
MAX_LINE = 64 * 1024


def parse_item(obj, where: str) -> Item:
    if not isinstance(obj, dict):
        _fail(where, "expected a JSON object")
    required = ("id", "sku", "split", "label", "damage", "printed_damage", "views")
    optional = ("damage_size_mm",)
    missing = [k for k in required if k not in obj]
    if missing:
        _fail(where, f"missing key(s) {missing}")
    extra = sorted(set(obj) - set(required) - set(optional))
    if extra:
        _fail(where, f"unknown key(s) {extra}")
    if not isinstance(obj["id"], str) or not obj["id"]:
        _fail(where, f"'id' must be a non-empty string, got {obj['id']!r}")
    where = f"{where} (item {obj['id']!r})"
    if not isinstance(obj["sku"], str) or not obj["sku"]:
        _fail(where, f"'sku' must be a non-empty string, got {obj['sku']!r}")
    if obj["split"] not in SPLITS:
        _fail(where, f"'split' must be one of {list(SPLITS)}, got {obj['split']!r}")
    if obj["label"] not in LABELS:
        _fail(where, f"'label' must be one of {list(LABELS)}, got {obj['label']!r}")
    dmg = obj["damage"]
    if not isinstance(dmg, list) or any(d not in DAMAGE_TYPES for d in dmg):
        _fail(where, f"'damage' must be a list drawn from {list(DAMAGE_TYPES)}, got {dmg!r}")
    if obj["label"] == "ok" and dmg:
        _fail(where, f"label 'ok' but damage {dmg!r} (must be [] when ok)")
    if not isinstance(obj["printed_damage"], bool):
        _fail(where, f"'printed_damage' must be true or false, got {obj['printed_damage']!r}")
    views = obj["views"]
    if not isinstance(views, dict) or not views:
        _fail(where, "'views' must be a non-empty object {VIEW: {rgb, depth, mask}}")
    parsed = {}
    for vname, vp in views.items():
        if not isinstance(vp, dict) or not isinstance(vp.get("rgb"), str):
            _fail(where, f"view {vname!r}: expected {{'rgb': path, 'depth': path|null, 'mask': path|null}}")
        bad = sorted(set(vp) - {"rgb", "depth", "mask"})
        if bad:
            _fail(where, f"view {vname!r}: unknown key(s) {bad}")
        for k in ("depth", "mask"):
            if vp.get(k) is not None and not isinstance(vp[k], str):
                _fail(where, f"view {vname!r}: {k!r} must be a path or null, got {vp[k]!r}"[:300])
        for k in ("rgb", "depth", "mask"):
            if vp.get(k) is not None:
                _relative_path(vp[k], where, f"view {vname!r} {k}")
        parsed[vname] = ViewPaths(vp["rgb"], vp.get("depth"), vp.get("mask"))
    sizes = _damage_sizes(obj.get("damage_size_mm", {}), dmg, where)
    return Item(obj["id"], obj["sku"], obj["split"], obj["label"], list(dmg),
                obj["printed_damage"], parsed, sizes)


def _damage_sizes(sizes, damage: list[str], where: str) -> dict[str, dict[str, float]]:
    """A validated copy of damage_size_mm: {kind in ``damage``: {name: finite number >= 0}}."""
    shape = "{KIND: {NAME: number >= 0}}"
    if not isinstance(sizes, dict):
        _fail(where, f"'damage_size_mm' must be an object {shape}, got {sizes!r}"[:300])
    out = {}
    for kind, named in sizes.items():
        if kind not in damage:
            _fail(where, f"'damage_size_mm' names {kind!r}, which is not in the item's damage "
                         f"{damage!r}"[:300])
        if not isinstance(named, dict):
            _fail(where, f"'damage_size_mm' {kind!r}: expected an object {{NAME: number >= 0}}, "
                         f"got {named!r}"[:300])
        for name, v in named.items():
            if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                    or v < 0):
                _fail(where, f"'damage_size_mm' {kind!r} {name!r}: must be a finite number >= 0, "
                             f"got {v!r}"[:300])
        out[kind] = dict(named)
    return out


def read_dataset(root: str | Path, check_files: bool = True) -> Dataset:
    """Read and validate a dataset; raise DatasetError naming the file, line and item."""
    root = Path(root)
    meta_path = root / "dataset.yaml"
    if not meta_path.is_file():
        raise DatasetError(f"{root}: not a dataset (no dataset.yaml)")
    try:
        meta = load_with_lines(meta_path.read_text(encoding="utf-8"))[0] or {}
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{meta_path}: not UTF-8 text ({exc})") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{meta_path}: not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a mapping with name, views, depth_units_mm")
    views = meta.get("views")
    if not isinstance(views, list) or not views or not all(isinstance(v, str) for v in views):
        raise DatasetError(f"{meta_path}: 'views' must be a non-empty list of view names, got {views!r}")
    try:
        depth_units = float(meta.get("depth_units_mm", 1.0))
    except (TypeError, ValueError, OverflowError):
        raise DatasetError(f"{meta_path}: 'depth_units_mm' must be a number") from None
    if not (math.isfinite(depth_units) and depth_units > 0):
        raise DatasetError(f"{meta_path}: 'depth_units_mm' must be a positive finite number, got {depth_units}")
    items_path = root / "items.jsonl"
    if not items_path.is_file():
        raise DatasetError(f"{root}: no items.jsonl")
    items: list[Item] = []
    seen: dict[str, int] = {}
    with items_path.open("rb") as fh:
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), b""), 1):
            where = f"{items_path}:{lineno}"
            if len(raw) > MAX_LINE:
                raise DatasetError(f"{where}: line longer than {MAX_LINE} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_int=_bounded_int, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            except RecursionError:
                raise DatasetError(f"{where}: JSON nested too deeply") from None
            except ValueError as exc:
                raise DatasetError(f"{where}: {exc}") from None
            item = parse_item(obj, where)
            if item.id in seen:
                raise DatasetError(f"{where}: item id {item.id!r} repeats line {seen[item.id]}")
            seen[item.id] = lineno
            unknown = sorted(set(item.views) - set(views))
            if unknown:
                raise DatasetError(f"{where} (item {item.id!r}): views {unknown} are not in "
                                   f"dataset.yaml's views {views}")
            if check_files:
                for vname, vp in item.views.items():
                    for kind, rel in (("rgb", vp.rgb), ("depth", vp.depth), ("mask", vp.mask)):
                        if rel is not None and not (root / rel).is_file():
                            raise DatasetError(f"{where} (item {item.id!r}): view {vname!r} {kind} "
                                               f"file {rel} does not exist")
            items.append(item)
    refs: dict[str, list[Path]] = {}
    ref_root = root / "references"
    if ref_root.is_dir():
        for sku_dir in sorted(p for p in ref_root.iterdir() if p.is_dir()):
            files = sorted(p for p in sku_dir.iterdir()
                           if p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith(DEPTH_SUFFIX))
            if files:
                refs[sku_dir.name] = files
    return Dataset(root, str(meta.get("name", root.name)), list(views), depth_units,
                   str(meta.get("notes", "")), items, refs)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # beyond 64 bits: no field of ours is that large
        raise ValueError(f"number {text[:24]}... is too large")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


class DatasetWriter:
    """Writes a dataset incrementally: images first, then one items.jsonl line per item."""

    def __init__(self, root: str | Path, name: str, views: list[str], depth_units_mm: float = 1.0,
                 notes: str = "", overwrite: bool = False):
        self.root = Path(root)
        if (self.root / "items.jsonl").exists() and not overwrite:
            raise DatasetError(f"{self.root} already holds a dataset; choose another --out or remove it")
        self.root.mkdir(parents=True, exist_ok=True)
        self.views = list(views)
        self.depth_units_mm = float(depth_units_mm)
        (self.root / "dataset.yaml").write_text(yaml.safe_dump(
            {"name": name, "views": self.views, "depth_units_mm": self.depth_units_mm,
             "notes": notes}, sort_keys=False))
        self._items = (self.root / "items.jsonl").open("w")

    def write_view(self, item_id: str, view: str, rgb: np.ndarray, depth_mm: np.ndarray | None = None,
                   mask: np.ndarray | None = None) -> ViewPaths:
        """Write one view's images (rgb in RGB order, depth in mm) and return their paths."""
        return write_view_files(self.root, item_id, view, rgb, depth_mm, mask, self.depth_units_mm)

    def add_item(self, item: Item) -> None:
        self._items.write(json.dumps(item.to_json()) + "\n")
        self._items.flush()

    def add_reference(self, sku: str, name: str, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> Path:
        """Write references/SKU/NAME.png (and NAME_depth.png when depth is given, in depth_units_mm)."""
        d = self.root / "references" / sku
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if depth_mm is not None:
            units = np.clip(np.round(depth_mm / self.depth_units_mm), 0, 65535).astype(np.uint16)
            cv2.imwrite(str(d / f"{name}{DEPTH_SUFFIX}.png"), units)
        return path

    def close(self) -> None:
        self._items.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_view_files(root: Path, item_id: str, view: str, rgb: np.ndarray, depth_mm: np.ndarray | None,
                     mask: np.ndarray | None, depth_units_mm: float = 1.0) -> ViewPaths:
    """Write a view's PNGs under ROOT/items/ITEM_ID/ (usable from worker processes)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"item {item_id!r} view {view!r}: rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    root = Path(root)
    (root / "items" / item_id).mkdir(parents=True, exist_ok=True)
    rgb_rel = f"items/{item_id}/{view}_rgb.png"
    cv2.imwrite(str(root / rgb_rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    depth_rel = mask_rel = None
    if depth_mm is not None:
        depth_rel = f"items/{item_id}/{view}_depth.png"
        units = np.clip(np.round(depth_mm / depth_units_mm), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(root / depth_rel), units)
    if mask is not None:
        mask_rel = f"items/{item_id}/{view}_mask.png"
        cv2.imwrite(str(root / mask_rel), np.where(mask > 0, 255, 0).astype(np.uint8))
    return ViewPaths(rgb_rel, depth_rel, mask_rel)


def merge_items(src: str | Path, dst: str | Path, split: str | None = None) -> int:
    """Add SRC's items to the dataset DST (their files hard-linked, or copied across file
    systems, under DST/items/); ``split`` moves them all to that split. Returns how many.

    For a validation split with many ok items: simulated ok items are cheap, and a 0.1 % budget
    needs thousands of them (docs/models.md). Both datasets must have the same views and depth
    units; an item id DST already has is refused before anything is written. SRC's references
    are not merged (DST keeps its own).
    """
    import os
    import shutil

    a, b = read_dataset(src), read_dataset(dst)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"merge: unknown split {split!r} (known: {list(SPLITS)})")
    if set(a.views) != set(b.views) or a.depth_units_mm != b.depth_units_mm:
        raise DatasetError(f"merge: {a.root} has views {a.views} at {a.depth_units_mm} mm per unit, "
                           f"{b.root} {b.views} at {b.depth_units_mm}: they must match")
    clash = sorted({it.id for it in a.items} & {it.id for it in b.items})
    if clash:
        raise DatasetError(f"merge: {b.root} already has item(s) {clash[:3]}"
                           f"{' ...' if len(clash) > 3 else ''} ({len(clash)} in all); nothing merged")
    lines = []
    for it in a.items:
        views = {}
        for v, vp in it.views.items():
            rels = []
            for rel in (vp.rgb, vp.depth, vp.mask):
                if rel is None:
                    rels.append(None)
                    continue
                new = f"items/{it.id}/{PurePosixPath(rel).name}"
                target = b.root / new
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    try:
                        os.link(a.root / rel, target)
                    except OSError:
                        shutil.copy2(a.root / rel, target)
                rels.append(new)
            views[v] = ViewPaths(*rels)
        moved = Item(it.id, it.sku, split or it.split, it.label, list(it.damage), it.printed_damage,
                     views, {k: dict(v) for k, v in it.damage_size_mm.items()})
        lines.append(json.dumps(moved.to_json()) + "\n")
    path = b.root / "items.jsonl"
    if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        lines.insert(0, "\n")  # a hand-made file without a final newline
    with path.open("a") as fh:
        fh.writelines(lines)
    return len(a.items)


def import_mvtec(src: str | Path, out: str | Path, reference_share: float = 0.2,
                 val_share: float = 0.5, seed: int = 0) -> Dataset:
    """Convert an MVTec-AD-style tree into the dataset format.

    Per CATEGORY (= sku): ``reference_share`` of train/good becomes references,
    the rest of train/good is split=train (ok). The test images (good and every
    DEFECT folder) are shuffled and split between val (``val_share``) and test.
    MVTec defect names are mapped to damage types where the name says so
    (crack/cut -> tear, hole -> hole, ...) and to 'crush' otherwise; the
    original name is kept in the notes.
    """
    src, out = Path(src), Path(out)
    cats = sorted(p for p in src.iterdir() if (p / "train" / "good").is_dir()) if src.is_dir() else []
    if not cats:
        raise DatasetError(f"{src}: no CATEGORY/train/good folders found (expected an MVTec-AD-style tree)")
    rng = np.random.default_rng(seed)
    writer = DatasetWriter(out, f"mvtec:{src.name}", ["main"], 1.0,
                           notes=(f"imported from {src}; per category {reference_share:.0%} of train/good as "
                                  f"references, the rest train; test split {val_share:.0%} val / rest test"))
    defect_map = {"crack": "tear", "cut": "tear", "tear": "tear", "hole": "hole", "poke": "hole",
                  "squeeze": "crush", "bent": "crush", "crush": "crush", "broken": "deconstruction",
                  "missing": "broken_set", "contamination": "spill", "liquid": "spill", "oil": "spill",
                  "color": "spill", "glue": "spill"}

    def damage_of(defect: str) -> list[str]:
        for key, kind in defect_map.items():
            if key in defect.lower():
                return [kind]
        return ["crush"]

    with writer:
        for cat in cats:
            sku = cat.name
            goods = sorted(p for p in (cat / "train" / "good").iterdir() if p.suffix.lower() in IMAGE_EXTS)
            order = rng.permutation(len(goods))
            n_ref = max(1, int(round(reference_share * len(goods))))
            for k, idx in enumerate(order):
                img = _read_rgb(goods[idx])
                if k < n_ref:
                    writer.add_reference(sku, f"{sku}_{goods[idx].stem}", img)
                else:
                    iid = f"{sku}-train-{goods[idx].stem}"
                    vp = writer.write_view(iid, "main", img)
                    writer.add_item(Item(iid, sku, "train", "ok", [], False, {"main": vp}))
            tests = []
            test_root = cat / "test"
            if test_root.is_dir():
                for dfolder in sorted(p for p in test_root.iterdir() if p.is_dir()):
                    for f in sorted(p for p in dfolder.iterdir() if p.suffix.lower() in IMAGE_EXTS):
                        tests.append((dfolder.name, f))
            for k, idx in enumerate(rng.permutation(len(tests))):
                defect, f = tests[idx]
                split = "val" if k < int(round(val_share * len(tests))) else "test"
                iid = f"{sku}-{defect}-{f.stem}"
                mask = None
                if defect != "good":
                    mpath = cat / "ground_truth" / defect / f"{f.stem}_mask.png"
                    if mpath.is_file():
                        mask = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
                img = _read_rgb(f)
                vp = writer.write_view(iid, "main", img, None, mask)
                damaged = defect != "good"
                writer.add_item(Item(iid, sku, split, "damaged" if damaged else "ok",
                                     damage_of(defect) if damaged else [], False, {"main": vp}))
    return read_dataset(out)


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
