"""The product gallery: per-SKU identification embeddings and anomaly memory banks, versioned.

Layout inside a model directory::

    gallery/current            one line: the version in use, e.g. v0003
    gallery/v0001/meta.yaml    skus, reference counts, sources, note, parent, time
    gallery/v0001/arrays.npz   per SKU i: emb_i (n, E), desc_i (n, G), bank_i (k, P), src_i (k,)

A change (training, ``rig enroll``, the review tool) never edits a version: it
writes a new one and moves ``current``; ``rollback`` moves it back. Both writes
are atomic renames, so a running rig reading ``current`` sees the old or the
new gallery, never half of one.

Memory bound: a SKU's patch bank is a greedy k-center coreset of at most
``bank_size`` patches (default 1024) of ``patch_dim`` float16 numbers (64), i.e.
at most 128 KiB per SKU; embeddings and descriptors are float16, one row per
reference image and orientation (8 each: the dihedral group), from at most
``MAX_REFS_PER_SKU`` (256) images.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..foundation.errors import ModelError
from ..foundation.hashing import file_sha256
from .anomaly import coreset, global_anomaly, map_score, patch_map
from .registration import RefSet

log = logging.getLogger(__name__)

BANK_SIZE = 1024
MAX_REFS_PER_SKU = 256
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass
class SkuEntry:
    """One product: what identification and anomaly scoring need of its references."""

    embeddings: np.ndarray      # (n, E) float16, L2-normalised, one row per reference orientation
    descs: np.ndarray           # (n, G) float16, L2-normalised
    bank: np.ndarray            # (k, P) float16 patch features
    bank_src: np.ndarray        # (k,) int16: which reference image each bank row came from
    patch_scale: float          # typical patch anomaly of a pristine reference (NaN: unknown)
    global_scale: float         # typical global anomaly of a pristine reference (NaN: unknown)
    sources: list[str] = field(default_factory=list)
    # how "damaged" the supervised head finds this product's own pristine look(s): the 90th
    # percentile over reference images of their damage logit (NaN: unknown, older galleries),
    # and its value when the product was enrolled for training (the baseline the fusion knows)
    ref_disc: float = float("nan")
    ref_disc_base: float = float("nan")
    # the damage logit of each reference image (median over its orientations), so that a later
    # enrollment can extend the entry from what the gallery stores (empty in older galleries)
    ref_discs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # registered references per view name (height, colour, footprint in canonical pose):
    # registration.py; empty for galleries without depth references (older ones included)
    geo: dict[str, RefSet] = field(default_factory=dict)

    @property
    def n_refs(self) -> int:
        return len(self.sources) or len(self.embeddings)


def merge_entries(old: SkuEntry, new: SkuEntry, bank_size: int = BANK_SIZE, seed: int = 0) -> SkuEntry:
    """``old`` extended by ``new`` from stored features only (no source image is re-read): every
    reference of both is kept; the patch bank is a coreset of both banks. Calibration scales stay
    the old entry's (measured leave-one-out on its references) unless it had none."""
    n_old = old.n_refs
    allp = np.concatenate([old.bank, new.bank]).astype(np.float32)
    allsrc = np.concatenate([old.bank_src.astype(np.int32), new.bank_src.astype(np.int32) + n_old])
    idx = coreset(allp, min(bank_size, len(allp)), seed)
    old_discs = old.ref_discs if len(old.ref_discs) else np.full(n_old, old.ref_disc, np.float32)
    new_discs = new.ref_discs if len(new.ref_discs) else np.full(new.n_refs, new.ref_disc, np.float32)
    discs = np.concatenate([old_discs, new_discs]).astype(np.float32)
    # a product with several looks (old and new packaging) is judged against its most damaged-looking
    # pristine look: over all references, 70 old ones would outvote a few new ones and the new look
    # would divert again; so the level never drops when references are added
    looks = [v for v in (_p90(discs), _p90(new_discs), old.ref_disc) if np.isfinite(v)]
    return SkuEntry(
        np.concatenate([old.embeddings, new.embeddings]), np.concatenate([old.descs, new.descs]),
        allp[idx].astype(np.float16), allsrc[idx].astype(np.int16),
        old.patch_scale if np.isfinite(old.patch_scale) else new.patch_scale,
        old.global_scale if np.isfinite(old.global_scale) else new.global_scale,
        list(old.sources) + list(new.sources),
        float(max(looks)) if looks else float("nan"), old.ref_disc_base, discs)


def _p90(values: np.ndarray) -> float:
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.percentile(finite, 90)) if finite.size else float("nan")


def build_sku_entry(outputs: list[dict[str, np.ndarray]], sources: list[str],
                    bank_size: int = BANK_SIZE, seed: int = 0,
                    source_index: list[int] | None = None) -> SkuEntry:
    """Build one SKU's entry from the model outputs of its reference images (one dict each).

    ``source_index[j]`` names the reference image (index into ``sources``) that
    output j came from, when one image gave several outputs (orientations);
    calibration leaves out every output of one image at a time.
    """
    if not outputs:
        raise ModelError("no reference images to build a gallery entry from")
    src_of = list(range(len(outputs))) if source_index is None else list(source_index)
    if len(sources) > MAX_REFS_PER_SKU:
        keep = set(np.random.default_rng(seed).choice(len(sources), MAX_REFS_PER_SKU, replace=False))
        rows = [j for j in range(len(outputs)) if src_of[j] in keep]
        renum = {old: new for new, old in enumerate(sorted(keep))}
        outputs = [outputs[j] for j in rows]
        src_of = [renum[src_of[j]] for j in rows]
        sources = [sources[i] for i in sorted(keep)]
    emb = np.stack([o["embedding"].ravel() for o in outputs]).astype(np.float32)
    desc = np.stack([o["global_desc"].ravel() for o in outputs]).astype(np.float32)
    patches, src = [], []
    for j, o in enumerate(outputs):
        pf = o["patch_features"]
        q = pf.reshape(pf.shape[0], -1).T
        patches.append(q)
        src.append(np.full(len(q), src_of[j], np.int16))
    allp, allsrc = np.concatenate(patches), np.concatenate(src)
    idx = coreset(allp, bank_size, seed)
    bank, bank_src = allp[idx], allsrc[idx]
    # calibration: how anomalous does a pristine reference look against the others?
    p_scores, g_scores = [], []
    src_arr = np.asarray(src_of)
    if len(sources) >= 2:
        for i in range(len(sources)):
            others = bank_src != i
            for j in np.flatnonzero(src_arr == i)[:1]:  # the image as taken (orientation 0)
                if others.any():
                    p_scores.append(map_score(patch_map(outputs[j]["patch_features"], bank[others])))
                g_scores.append(global_anomaly(desc[j], desc[src_arr != i]))
    p_scale = float(np.median(p_scores)) if p_scores else float("nan")
    g_scale = float(np.median(g_scores)) if g_scores else float("nan")
    per_image: dict[int, list[float]] = {}
    for j, o in enumerate(outputs):
        per_image.setdefault(src_of[j], []).append(float(np.ravel(o["damage_logit"])[0]))
    discs = np.array([np.median(per_image[i]) for i in sorted(per_image)], np.float64)
    ref_disc = float(np.percentile(discs, 90))
    return SkuEntry(emb.astype(np.float16), desc.astype(np.float16), bank.astype(np.float16),
                    bank_src, p_scale, g_scale, list(sources), ref_disc, ref_discs=discs)


@dataclass
class Gallery:
    skus: dict[str, SkuEntry]
    version: str = ""
    note: str = ""

    def default_scales(self) -> tuple[float, float]:
        """Scales for SKUs with a single reference: the median over the others."""
        ps = [e.patch_scale for e in self.skus.values() if np.isfinite(e.patch_scale)]
        gs = [e.global_scale for e in self.skus.values() if np.isfinite(e.global_scale)]
        return (float(np.median(ps)) if ps else 1.0, float(np.median(gs)) if gs else 0.05)

    def disc_shift(self, sku: str) -> float:
        """How much more "damaged-like" the supervised head finds this product's references now
        than when the model was trained (>= 0). The scorer subtracts it from the damage logit:
        after reviewed new-packaging images are enrolled, the new look is judged against its own
        references without retraining; a product the model was trained on has shift 0."""
        e = self.skus[sku]
        if not (np.isfinite(e.ref_disc) and np.isfinite(e.ref_disc_base)):
            return 0.0
        return max(0.0, e.ref_disc - e.ref_disc_base)

    def scales(self, sku: str) -> tuple[float, float]:
        e = self.skus[sku]
        dp, dg = self.default_scales()
        p = e.patch_scale if np.isfinite(e.patch_scale) else dp
        g = e.global_scale if np.isfinite(e.global_scale) else dg
        return max(p, 1e-6), max(g, 1e-4)

    def nbytes(self) -> int:
        return sum(e.embeddings.nbytes + e.descs.nbytes + e.bank.nbytes
                   + sum(r.nbytes() for r in e.geo.values()) for e in self.skus.values())

    def geo_scales(self) -> dict[str, float]:
        """Working scale per view name (the same for every product: it belongs to the camera)."""
        out: dict[str, float] = {}
        for e in self.skus.values():
            for v, r in e.geo.items():
                out.setdefault(v, r.scale)
        return out


def _gallery_root(model_dir: str | Path) -> Path:
    return Path(model_dir) / "gallery"


def list_versions(model_dir: str | Path) -> list[dict]:
    """Every stored version, oldest first: version, created, note, n_skus, current."""
    root = _gallery_root(model_dir)
    if not Path(model_dir).is_dir():
        raise ModelError(f"model folder {model_dir} does not exist")
    if not root.is_dir():
        raise ModelError(f"{model_dir}: no gallery (missing {root}/); is it a model folder? "
                         "'rig train' writes one, 'rig enroll --model DIR --sku SKU IMAGE...' starts one")
    cur = current_version(model_dir) if (root / "current").is_file() else None
    out = []
    for d in sorted(p for p in root.glob("v*") if p.is_dir() and _VERSION.match(p.name)):
        meta = yaml.safe_load((d / "meta.yaml").read_text()) or {}
        out.append({"version": d.name, "created": meta.get("created", ""), "note": meta.get("note", ""),
                    "n_skus": len(meta.get("skus", {})), "parent": meta.get("parent"),
                    "current": d.name == cur})
    return out


def current_version(model_dir: str | Path) -> str:
    ptr = _gallery_root(model_dir) / "current"
    if not ptr.is_file():
        raise ModelError(f"{model_dir}: no gallery (missing {ptr}); run 'rig train' or 'rig enroll'")
    try:
        version = ptr.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{ptr}: unreadable: {exc}") from None
    return _check_version_name(model_dir, version)


def _verify_arrays(d: Path, meta) -> None:
    """The version's arrays must have the SHA-256 its meta.yaml records (written by save_gallery)."""
    want = (meta or {}).get("arrays_sha256") if isinstance(meta, dict) else None
    if want is None:
        raise ModelError(f"{d / 'meta.yaml'}: records no arrays_sha256, so {d / 'arrays.npz'} cannot be "
                         "verified; re-save the gallery (rig enroll)")
    got = file_sha256(d / "arrays.npz")
    if got != str(want).lower():
        raise ModelError(f"{d / 'arrays.npz'}: SHA-256 {got[:16]}... does not match meta.yaml's "
                         f"{str(want)[:16]}... (changed or damaged); roll back to another version or restore it")


def _set_current(model_dir: Path, version: str) -> None:
    root = _gallery_root(model_dir)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".current.")
    with os.fdopen(fd, "w") as fh:
        fh.write(version + "\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the rig may run as another user
    os.replace(tmp, root / "current")


def rollback(model_dir: str | Path, version: str) -> str:
    """Make an earlier (or later) stored version current again; returns it."""
    d = _gallery_root(model_dir) / str(version)
    if not isinstance(version, str) or not _VERSION.match(version) or not (d / "meta.yaml").is_file():
        known = [v["version"] for v in list_versions(model_dir)]
        raise ModelError(f"{model_dir}: no gallery version {version!r}; stored: {known}")
    load_gallery(model_dir, version)  # verified (hash, contents) before it becomes current
    _set_current(Path(model_dir), version)
    log.info("gallery of %s rolled back to %s", model_dir, version)
    return version


def save_gallery(model_dir: str | Path, gallery: Gallery, note: str = "") -> str:
    """Write the gallery as a new version and make it current; returns the version name."""
    root = _gallery_root(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    nums = [int(_VERSION.match(p.name).group(1)) for p in root.iterdir() if _VERSION.match(p.name)]
    version = f"v{(max(nums) + 1 if nums else 1):04d}"
    parent = current_version(model_dir) if (root / "current").is_file() else None
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".new-"))
    arrays, meta_skus = {}, {}
    for i, (sku, e) in enumerate(sorted(gallery.skus.items())):
        arrays[f"emb_{i}"], arrays[f"desc_{i}"] = e.embeddings, e.descs
        arrays[f"bank_{i}"], arrays[f"src_{i}"] = e.bank, e.bank_src
        if len(e.ref_discs):
            arrays[f"disc_{i}"] = np.asarray(e.ref_discs, np.float32)
        meta_skus[sku] = {"index": i, "n_refs": e.n_refs, "bank": len(e.bank),
                          "patch_scale": float(e.patch_scale), "global_scale": float(e.global_scale),
                          "ref_disc": float(e.ref_disc), "ref_disc_base": float(e.ref_disc_base),
                          "sources": list(e.sources)}
        geo = {}
        for j, (view, r) in enumerate(sorted(e.geo.items())):
            arrays[f"geoh_{i}_{j}"], arrays[f"geoc_{i}_{j}"] = r.height, r.rgb
            arrays[f"geof_{i}_{j}"] = np.packbits(r.fg, axis=-1)
            geo[view] = {"index": j, "n": r.n, "scale": float(r.scale),
                         "score_ref": [float(v) for v in r.score_ref]}
        if geo:
            meta_skus[sku]["geo"] = geo
    np.savez_compressed(tmp / "arrays.npz", **arrays)  # the registered references compress well
    meta = {"version": version, "parent": parent, "note": note,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "arrays_sha256": file_sha256(tmp / "arrays.npz"),
            "skus": meta_skus}
    (tmp / "meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    os.replace(tmp, root / version)
    _set_current(Path(model_dir), version)
    gallery.version, gallery.note = version, note
    log.info("gallery %s written (%d SKUs, %.1f KiB)", version, len(gallery.skus), gallery.nbytes() / 1024)
    return version


def _check_version_name(model_dir, version: str) -> str:
    """A gallery version is a folder ``vNNNN`` directly in the gallery: no path may leave it."""
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ModelError(f"{_gallery_root(model_dir)}: gallery version {version!r} is not a name like v0001 "
                         "(the 'current' pointer or the request is wrong)")
    return version


def load_gallery(model_dir: str | Path, version: str | None = None) -> Gallery:
    version = _check_version_name(model_dir, version or current_version(model_dir))
    d = _gallery_root(model_dir) / version
    try:
        meta = yaml.safe_load((d / "meta.yaml").read_text())
        _verify_arrays(d, meta)
        arrays = np.load(d / "arrays.npz", allow_pickle=False)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ModelError(f"{d}: gallery version {version} is unreadable: {exc}") from None
    skus = {}
    for sku, m in meta["skus"].items():
        i = m["index"]
        skus[sku] = SkuEntry(arrays[f"emb_{i}"], arrays[f"desc_{i}"], arrays[f"bank_{i}"],
                             arrays[f"src_{i}"], float(m["patch_scale"]), float(m["global_scale"]),
                             list(m.get("sources", [])), float(m.get("ref_disc", float("nan"))),
                             float(m.get("ref_disc_base", float("nan"))),
                             arrays[f"disc_{i}"] if f"disc_{i}" in arrays else np.zeros(0, np.float32),
                             _load_geo(arrays, i, m))
    if not skus:
        raise ModelError(f"{d}: gallery version {version} holds no SKU")
    return Gallery(skus, version, meta.get("note", ""))


def _load_geo(arrays, i: int, meta: dict) -> dict[str, RefSet]:
    geo = {}
    for view, g in (meta.get("geo") or {}).items():
        j = g["index"]
        h = arrays[f"geoh_{i}_{j}"]
        fg = np.unpackbits(arrays[f"geof_{i}_{j}"], axis=-1)[..., :h.shape[-1]].astype(bool)
        geo[view] = RefSet(h, arrays[f"geoc_{i}_{j}"], fg, float(g["scale"]),
                           tuple(float(v) for v in g.get("score_ref", (np.nan, np.nan))))
    return geo


class GalleryIndex:
    """The gallery's reference embeddings as one matrix, for identification by cosine kNN."""

    def __init__(self, gallery: Gallery):
        self.skus = sorted(gallery.skus)
        rows, owner = [], []
        for k, sku in enumerate(self.skus):
            e = gallery.skus[sku].embeddings.astype(np.float32)
            rows.append(e)
            owner.append(np.full(len(e), k))
        self.embeddings = np.concatenate(rows)
        self.owner = np.concatenate(owner)

    def identify(self, embeddings: list[np.ndarray], temperature: float) -> tuple[str, float, float]:
        """(sku, softmax confidence, margin between the best and second-best SKU similarity).

        Per SKU, each view's best cosine similarity to that SKU's references, averaged over the views.
        """
        per_sku = np.zeros(len(self.skus))
        for emb in embeddings:
            sims = self.embeddings @ emb.ravel().astype(np.float32)
            best = np.full(len(self.skus), -1.0)
            np.maximum.at(best, self.owner, sims)
            per_sku += best
        per_sku /= len(embeddings)
        order = np.argsort(per_sku)[::-1]
        top = per_sku[order[0]]
        margin = float(top - per_sku[order[1]]) if len(order) > 1 else float(top)
        z = (per_sku - top) / temperature
        conf = float(1.0 / np.exp(z).sum())
        return self.skus[order[0]], conf, margin
