"""`rig predict`: score arbitrary colour (and optional depth) images with a model, no dataset needed.

Each image is one view of one item, scored through the runtime's own path
(:class:`damage_rig.rig.detect.Scorer` on ONNX Runtime, the model's gallery):
the product is identified against the gallery unless a SKU is given, the
fused score is compared with the model's threshold, and the evidence map
(rig/detect/maps.py) is painted on the image where it exceeds a pristine
view's level. Writes OUT/predictions.csv and OUT/overlays/<name>.png.

Depth, where there is any: NAME_depth.png beside NAME.png (the dataset's
convention for references), or a folder of depth images named like the colour
ones; 16-bit, ``depth_units_mm`` millimetres per count (0 = no data).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..rig.dataset import DEPTH_SUFFIX, IMAGE_EXTS
from ..rig.detect.maps import evidence_map, overlay
from ..rig.detect.scoring import Scorer
from ..rig.foundation.errors import DatasetError, ModelError
from ..rig.preprocess.framing import window_for

log = logging.getLogger(__name__)

OVERLAY_FLOOR = 1.5  # evidence below 1.5x a pristine view's is not painted (as in the eval report)
CSV_COLUMNS = ["file", "sku", "sku_given", "sku_conf", "score", "threshold", "decision", "type", "type_prob",
               "evidence_max", "depth", "overlay"]


@dataclass
class Prediction:
    file: Path
    sku: str
    sku_given: bool
    sku_conf: float
    score: float
    threshold: float
    damaged: bool
    type: str
    type_prob: float
    evidence_max: float
    depth: Path | None
    overlay: Path | None

    def row(self) -> dict:
        return {"file": str(self.file), "sku": self.sku, "sku_given": int(self.sku_given),
                "sku_conf": f"{self.sku_conf:.4f}", "score": f"{self.score:.6f}",
                "threshold": f"{self.threshold:.6f}", "decision": "damaged" if self.damaged else "ok",
                "type": self.type, "type_prob": f"{self.type_prob:.4f}" if self.type else "",
                "evidence_max": f"{self.evidence_max:.3f}", "depth": str(self.depth or ""),
                "overlay": str(self.overlay or "")}


def collect_images(images=(), folder=None) -> list[Path]:
    """The colour images to score: the files given, or every image in ``folder`` (sorted; its
    NAME_depth.png files are depth, not images to score). Errors name what is missing."""
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise DatasetError(f"--folder {folder}: not a folder")
        found = sorted(p for p in root.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith(DEPTH_SUFFIX))
        if not found:
            raise DatasetError(f"--folder {folder}: no images ({', '.join(IMAGE_EXTS)}) in it")
        return found
    out = []
    for name in images:
        p = Path(name)
        if not p.is_file():
            raise DatasetError(f"image {name}: no such file")
        out.append(p)
    if not out:
        raise DatasetError("no images to score: give IMAGE... or --folder DIR")
    return out


def depth_for(image: Path, depth_dir: Path | None) -> Path | None:
    """The depth image that goes with ``image``, or None."""
    places = [depth_dir] if depth_dir is not None else [image.parent]
    for d in places:
        for name in (f"{image.stem}{DEPTH_SUFFIX}.png", f"{image.stem}.png"):
            p = d / name
            if p != image and p.is_file():
                return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"image {path}: cannot read it (not an image OpenCV decodes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_mm(path: Path, units_mm: float, shape: tuple[int, int]) -> np.ndarray:
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None or d.ndim != 2 or d.dtype != np.uint16:
        got = "unreadable" if d is None else f"{d.dtype} {d.shape}"
        raise DatasetError(f"depth {path}: expected a 16-bit single-channel PNG, got {got}")
    if d.shape != shape:
        raise DatasetError(f"depth {path}: {d.shape[1]}x{d.shape[0]} does not match its colour image "
                           f"({shape[1]}x{shape[0]})")
    return d.astype(np.float32) * float(units_mm)


def _overlay_names(files: list[Path]) -> list[str]:
    """One overlay file name per image, unique even when two folders hold the same name."""
    stems = [f.stem for f in files]
    return [s if stems.count(s) == 1 else f"{i:04d}_{s}" for i, s in enumerate(stems)]


def predict(model_dir, files: list[Path], out_dir, *, sku: str | None = None, depth_dir=None,
            depth_units_mm: float = 1.0, view: str | None = None, threads: int = 2,
            progress: bool = False) -> list[Prediction]:
    """Score ``files``; write OUT/predictions.csv and OUT/overlays/; return the predictions."""
    from tqdm import tqdm

    if not depth_units_mm > 0:
        raise DatasetError(f"--depth-units must be > 0, got {depth_units_mm:g}")
    depth_dir = Path(depth_dir) if depth_dir is not None else None
    if depth_dir is not None and not depth_dir.is_dir():
        raise DatasetError(f"--depth {depth_dir}: not a folder")
    scorer = Scorer.load(model_dir, threads=threads, max_batch=1)
    if sku is not None and sku not in scorer.gallery.skus:
        known = sorted(scorer.gallery.skus)
        raise ModelError(f"--sku {sku!r}: not in the gallery of {model_dir} ({len(known)} SKUs: "
                         f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''})")
    view = view or (scorer.views[0] if scorer.views else "image")
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    results = []
    for f, name in zip(tqdm(files, desc="predict", unit="img", disable=not progress), _overlay_names(files)):
        rgb = read_rgb(f)
        dpath = depth_for(f, depth_dir)
        depth = read_depth_mm(dpath, depth_units_mm, rgb.shape[:2]) if dpath is not None else None
        if depth is None and scorer.channels > 3:
            log.info("%s: no depth; scored as colour only (the model's depth input reads 'no data')", f)
        # a whole camera image is cut to the item's crop as the model's views were (card input.reframe)
        win = window_for(rgb, depth, scorer.reframe)
        crop, dcrop = (rgb, depth) if win is None else (win.cut(rgb), win.cut(depth))
        r = scorer.score_crops({view: (crop, dcrop)}, item_id=str(f), sku=sku)
        vs = r.views[view]
        m = evidence_map(vs, crop.shape[:2])
        if win is not None:
            m = win.paste(m)
        over = out / "overlays" / f"{name}.png"
        if not cv2.imwrite(str(over), cv2.cvtColor(overlay(rgb, m, floor=OVERLAY_FLOOR), cv2.COLOR_RGB2BGR)):
            raise DatasetError(f"cannot write {over}")
        type_prob = r.type_probs.get(r.type, 0.0) if r.type else 0.0
        results.append(Prediction(f, r.sku_pred, sku is not None, r.sku_conf, r.score, r.threshold, r.damaged,
                                  r.type, type_prob, float(np.nanmax(m)) if m.size else 0.0, dpath, over))
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for p in results:
            w.writerow(p.row())
    return results
