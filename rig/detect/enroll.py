"""Add or replace a product's references without retraining.

Enrolment runs the reference images through the same network (the model's
ONNX on the configured backend) and writes a new gallery version; the old one
stays on disk for ``rollback``. Identification and the patch anomaly read RGB
features, so no depth is needed to enrol a product. A reference that carries
depth (``NAME_depth.png`` beside ``NAME.png``), and, in training, the train
split's ok views, also become the product's *registered references*
(registration.py): canonical height and colour per view name that each view is
compared with after registration.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..dataset import reference_depth_path
from ..foundation.errors import DatasetError, ModelError
from ..preprocess.framing import frame
from .gallery import BANK_SIZE, Gallery, build_sku_entry, load_gallery, merge_entries, save_gallery
from .registration import MAX_REFS, RefSet, canonical, make_refset, scale_for
from .scoring import Scorer

log = logging.getLogger(__name__)


def read_rgb(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path} (missing, corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_reference(path: str | Path, framing: dict | None = None, depth_units_mm: float = 1.0,
                   need_depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, depth_mm or None) of a reference image, framed like the model's views
    (rig/preprocess/framing.py; ``framing`` None: as stored). Its depth (NAME_depth.png) is read
    when it is wanted or when it helps find the item to frame."""
    rgb = read_rgb(path)
    dp = reference_depth_path(path) if (need_depth or framing) else None
    depth = read_depth_mm(dp, depth_units_mm) if dp is not None else None
    return frame(rgb, depth, framing)


def dihedral(rgb: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations by 90 degrees and mirror images of a crop.

    Items lie on the belt in any orientation; references are a handful of
    photos. Enrolling every reference in all 8 exact orientations lets the
    bank and the descriptors match a rotated item without inventing pixels.
    """
    out = []
    for k in range(4):
        r = np.rot90(rgb, k)
        out += [np.ascontiguousarray(r), np.ascontiguousarray(r[:, ::-1])]
    return out


def image_outputs(scorer, images: list, sources: list[str], augment: bool = True,
                  first_index: int = 0) -> tuple[list[dict], list[int]]:
    """Backend outputs for RGB arrays (or paths) and, per output, the index of its image."""
    outputs, src = [], []
    for i, (im, s) in enumerate(zip(images, sources)):
        a = read_reference(im, scorer.reframe)[0] if isinstance(im, (str, Path)) else im
        views = dihedral(a) if augment else [a]
        batch = np.stack([scorer.prepare_view(v, None, where=f"reference {s}") for v in views])
        outputs += scorer.run_batch(batch)
        src += [first_index + i] * len(views)
    return outputs, src


def entry_from_images(scorer, images: list, sources: list[str], bank_size: int = BANK_SIZE,
                      augment: bool = True, known_good: list | None = None,
                      known_good_sources: list[str] | None = None):
    """Gallery entry for one SKU from reference images run through the scorer's backend.

    ``known_good``: further pristine crops (for example the train split's ok
    views, which training adds) enrolled as they are, without orientations.
    """
    outputs, src = image_outputs(scorer, images, sources, augment)
    sources = list(sources)
    if known_good:
        more, more_src = image_outputs(scorer, known_good, known_good_sources, False, len(sources))
        outputs += more
        src += more_src
        sources += list(known_good_sources)
    return build_sku_entry(outputs, sources, bank_size, source_index=src)


def read_depth_mm(path: str | Path, depth_units_mm: float = 1.0) -> np.ndarray:
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None or d.dtype != np.uint16 or d.ndim != 2:
        raise DatasetError(f"depth {path} is missing or not a single-channel 16-bit PNG")
    return d.astype(np.float32) * np.float32(depth_units_mm)


def views_of_reference(path: str | Path, view_names) -> list[str]:
    """View names a reference image belongs to: those its file name mentions (ref03_top.png),
    else every view (a reference taken by a camera like the rig's)."""
    tokens = set(Path(path).stem.replace("-", "_").split("_"))
    named = [v for v in view_names if v in tokens]
    return named or list(view_names)


def view_scales(dataset, n: int = 200) -> dict[str, float]:
    """Working scale per view name from the sizes of the train split's crops (registration)."""
    sizes: dict[str, list[int]] = {}
    for item in dataset.split("train")[:n]:
        for v, vp in item.views.items():
            if vp.depth is None:
                continue
            if dataset.framing:  # the size of the crop the views are framed to
                sizes.setdefault(v, []).append(max(dataset.load_rgb(item, v).shape[:2]))
                continue
            img = cv2.imread(str(dataset.path(vp.rgb)), cv2.IMREAD_UNCHANGED)
            if img is not None:
                sizes.setdefault(v, []).append(max(img.shape[:2]))
    return {v: scale_for(s) for v, s in sizes.items()}


def geo_refs(scales: dict[str, float], views: dict[str, list[tuple[np.ndarray, np.ndarray | None]]],
             max_refs: int = MAX_REFS) -> dict[str, RefSet]:
    """Registered references per view name from (rgb, depth_mm) pairs; views without depth are
    skipped (their height is unknown), a view name with fewer than 2 usable pairs gets none."""
    out = {}
    for v, pairs in views.items():
        if v not in scales:
            continue
        canons = [canonical(rgb, depth, scales[v]) for rgb, depth in pairs[:max_refs] if depth is not None]
        canons = [c for c in canons if c.fg.sum() > 10]
        if len(canons) >= 2:
            out[v] = make_refset(canons, scales[v], max_refs)
    return out


def reference_pairs(paths, scales: dict[str, float], depth_units_mm: float = 1.0,
                    framing: dict | None = None) -> dict[str, list]:
    """{view: [(rgb, depth_mm)]} from reference images that carry depth (framed by ``framing``)."""
    out: dict[str, list] = {}
    for p in paths:
        if not isinstance(p, (str, Path)):
            continue
        dp = reference_depth_path(p)
        if dp is None:
            continue
        pair = read_reference(p, framing, depth_units_mm, need_depth=True)
        for v in views_of_reference(p, scales):
            out.setdefault(v, []).append(pair)
    return out


def _baseline(prev, entry) -> float:
    """The damage-logit baseline of a product (Gallery.disc_shift): kept from the entry it
    replaces (what the model was trained with), its own value for a product new to the gallery."""
    for b in (getattr(prev, "ref_disc_base", np.nan), getattr(prev, "ref_disc", np.nan)):
        if np.isfinite(b):
            return float(b)
    return entry.ref_disc


def enroll(model_dir: str | Path, sku: str, images: list, *, replace: bool = True, scorer=None,
           note: str = "", bank_size: int = BANK_SIZE) -> str:
    """Add (or, with replace=False, extend) SKU's references; returns the new gallery version.

    ``images``: paths or (H, W, 3) uint8 RGB arrays. ``replace=True`` drops the
    SKU's previous references; ``replace=False`` keeps them only as far as the
    stored sources can be re-read from disk.

    ``replace=False`` keeps every existing reference: the new images' entry is merged with the
    stored one (gallery.merge_entries) from the gallery's own features, so references whose
    source files are gone (a gallery trained on another machine) are never lost.
    """
    if not sku or not isinstance(sku, str):
        raise ModelError(f"enroll needs a non-empty SKU name, got {sku!r}")
    if not images:
        raise ModelError(f"enroll {sku!r}: no reference images given")
    scorer = scorer or Scorer.load(model_dir)
    gallery = load_gallery(model_dir)
    sources = [str(im) if isinstance(im, (str, Path)) else f"array{i}" for i, im in enumerate(images)]
    entry = entry_from_images(scorer, list(images), sources, bank_size)
    if not replace and sku in gallery.skus:
        entry = merge_entries(gallery.skus[sku], entry, bank_size)
    entry.ref_disc_base = _baseline(gallery.skus.get(sku), entry)
    scales = gallery.geo_scales()
    entry.geo = geo_refs(scales, reference_pairs(images, scales, framing=scorer.reframe))
    if not entry.geo and not replace and sku in gallery.skus:
        entry.geo = dict(gallery.skus[sku].geo)  # extending with colour-only images keeps the shape
    skus = dict(gallery.skus)
    action = "replaced" if sku in skus else "added"
    skus[sku] = entry
    version = save_gallery(model_dir, Gallery(skus), note or f"enroll: {action} {sku} ({entry.n_refs} refs)")
    log.info("%s SKU %s: %d references -> gallery %s", action, sku, entry.n_refs, version)
    if scorer.model_dir is not None and Path(scorer.model_dir) == Path(model_dir):
        scorer.reload_gallery()
    return version


def enroll_dataset(model_dir: str | Path, dataset, *, scorer=None, skus: list[str] | None = None,
                   replace_all: bool = False, note: str = "", bank_size: int = BANK_SIZE,
                   progress: bool = False, known_good_per_sku: int = 0, seed: int = 0) -> str:
    """Enroll every SKU of DATASET/references (or the listed ones) as one new gallery version.

    ``replace_all`` starts from an empty gallery (training does this);
    otherwise SKUs not in the dataset keep their current entries.
    """
    refs = dataset.references
    wanted = sorted(refs) if skus is None else list(skus)
    missing = [s for s in wanted if s not in refs]
    if missing:
        raise DatasetError(f"{dataset.root}: no references for SKU(s) {missing} "
                           f"(expected images in {dataset.root / 'references' / missing[0]}/)")
    if not wanted:
        raise DatasetError(f"{dataset.root}: no references/SKU/*.png folders to enroll")
    if scorer is None:
        scorer = Scorer.load(model_dir)
    dataset.set_framing(scorer.reframe)  # known-good views framed as the model's views
    skus_out = {} if replace_all else dict(load_gallery(model_dir).skus)
    it = wanted
    if progress:
        from tqdm import tqdm

        it = tqdm(wanted, desc="gallery", unit="sku")
    rng = np.random.default_rng(seed)
    good: dict[str, list] = {}
    if known_good_per_sku > 0:
        for item in dataset.split("train"):
            if not item.damaged:
                good.setdefault(item.sku, []).extend((item, v) for v in item.views)
    scales = view_scales(dataset) if replace_all else load_gallery(model_dir).geo_scales()
    if not scales and not replace_all:
        scales = view_scales(dataset)
    for sku in it:
        paths = refs[sku]
        views = good.get(sku, [])
        if len(views) > known_good_per_sku:
            views = [views[i] for i in sorted(rng.choice(len(views), known_good_per_sku, replace=False))]
        kg = [dataset.load_rgb(item, v) for item, v in views]
        kg_src = [f"{item.id}/{v}" for item, v in views]
        entry = entry_from_images(scorer, paths, [str(p) for p in paths], bank_size,
                                  known_good=kg, known_good_sources=kg_src)
        entry.ref_disc_base = _baseline(skus_out.get(sku), entry)
        entry.geo = geo_refs(scales, _geo_pairs(dataset, paths, good.get(sku, []), scales, rng))
        skus_out[sku] = entry
    version = save_gallery(model_dir, Gallery(skus_out),
                           note or f"references of {len(wanted)} SKU(s) from {dataset.root}")
    if scorer.model_dir is not None and Path(scorer.model_dir) == Path(model_dir):
        scorer.set_gallery(load_gallery(model_dir))
    return version


def _geo_pairs(dataset, paths, good: list, scales: dict[str, float], rng) -> dict[str, list]:
    """{view: [(rgb, depth_mm)]}: references with depth first, then random ok train views."""
    pairs = reference_pairs(paths, scales, dataset.depth_units_mm, dataset.framing)
    by_view: dict[str, list] = {}
    for item, v in good:
        by_view.setdefault(v, []).append(item)
    for v, items in by_view.items():
        need = MAX_REFS - len(pairs.get(v, []))
        if need <= 0 or v not in scales:
            continue
        for i in sorted(rng.choice(len(items), min(need, len(items)), replace=False)):
            depth = dataset.load_depth_mm(items[i], v)
            if depth is not None:
                pairs.setdefault(v, []).append((dataset.load_rgb(items[i], v), depth))
    return pairs
