"""Add or replace a product's references without retraining.

Enrolment runs the reference images through the same network (the model's
ONNX on the configured backend) and writes a new gallery version; the old one
stays on disk for ``rollback``. Reference images are RGB only: identification
and anomaly read RGB features, so no depth is needed to enrol a product.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..foundation.errors import DatasetError, ModelError
from .gallery import BANK_SIZE, Gallery, build_sku_entry, load_gallery, merge_entries, save_gallery
from .scoring import Scorer

log = logging.getLogger(__name__)


def read_rgb(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path} (missing, corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


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
        a = read_rgb(im) if isinstance(im, (str, Path)) else im
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
        skus_out[sku] = entry
    version = save_gallery(model_dir, Gallery(skus_out),
                           note or f"references of {len(wanted)} SKU(s) from {dataset.root}")
    if scorer.model_dir is not None and Path(scorer.model_dir) == Path(model_dir):
        scorer.set_gallery(load_gallery(model_dir))
    return version
