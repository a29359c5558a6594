"""Reviewed items -> the dataset format, so `rig train` learns from the rig's own verdicts.

Labels map as: damaged -> label 'damaged' with the reviewer's type and, where the
reviewer marked the damage (rig/review/masks.py), the view's mask; not_damaged
and packaging_changed -> 'ok'. Packaging-changed crops are also written as
references of their SKU (they show the product's current look). The split is
a stable hash of the item id (``val_share`` of them go to val), so exporting
again gives every item the same split. Items whose crops were never saved or
were removed by retention are skipped and counted. ``reviews.csv`` beside the
dataset names who labelled each item and when (the dataset format itself has no
place for it).

The lead wires this as `rig dataset export --state DIR --out DATASET`
(:func:`add_export_arguments` / :func:`run_export`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..dataset import Dataset, DatasetWriter, Item, read_dataset
from ..foundation.errors import DatasetError
from .masks import MaskStore
from .store import ReviewStore

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    dataset: Dataset
    exported: int
    skipped_no_crops: int
    references: int
    masks: int = 0


def split_of(item_id: str, val_share: float) -> str:
    h = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    return "val" if h < val_share else "train"


def export_reviewed(state_dir: str | Path, out: str | Path, val_share: float = 0.2,
                    overwrite: bool = False) -> ExportReport:
    if not 0.0 <= val_share < 1.0:
        raise DatasetError(f"val_share must be in [0, 1), got {val_share}")
    store = ReviewStore(state_dir)
    try:
        rows = store.reviewed()
    finally:
        store.close()
    if not rows:
        raise DatasetError(f"{state_dir}: no reviewed items to export (label diverted items with `rig review`)")
    views = sorted({v for r in rows for v in r["views"]})
    exported = skipped = refs = n_masks = 0
    masks = MaskStore(Path(state_dir))
    reviews = []
    with DatasetWriter(out, f"review:{Path(state_dir).name}", views, 1.0, overwrite=overwrite,
                       notes=f"reviewed items exported from the event log in {state_dir}") as w:
        for r in rows:
            images = {}
            for v in r["views"]:
                path = r["crops"].get(v, {}).get("rgb")
                img = cv2.imread(path, cv2.IMREAD_COLOR) if path and not r["crops_deleted"] else None
                if img is not None:
                    images[v] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if not images:
                skipped += 1
                continue
            damaged = r["label"] == "damaged"
            vps = {}
            for v, img in images.items():
                m = _mask(masks, r["id"], v, img.shape[:2]) if damaged else None
                n_masks += m is not None
                vps[v] = w.write_view(r["id"], v, img, mask=m)
            reviews.append([r["id"], r["label"], r["label_type"] or "", r["reviewer"] or "",
                            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(r["labelled_at"] or 0)),
                            " ".join(v for v in vps if vps[v].mask)])
            w.add_item(Item(r["id"], r["sku_pred"], split_of(r["id"], val_share),
                            "damaged" if damaged else "ok",
                            [r["label_type"]] if damaged and r["label_type"] else [], False, vps))
            if r["label"] == "packaging_changed":
                for v, img in images.items():
                    w.add_reference(r["sku_pred"], f"{r['id']}_{v}", img)
                    refs += 1
            exported += 1
    with (Path(out) / "reviews.csv").open("w", newline="") as f:
        cw = csv.writer(f)
        cw.writerow(["id", "label", "type", "reviewer", "labelled_at", "masked_views"])
        cw.writerows(reviews)
    if skipped:
        log.warning("export: %d reviewed item(s) skipped: their crops are gone (retention) or were never saved",
                    skipped)
    return ExportReport(read_dataset(out), exported, skipped, refs, n_masks)


def _mask(masks: MaskStore, item_id: str, view: str, shape) -> np.ndarray | None:
    """The reviewer's mask of the view at the crop's size (None when none was drawn)."""
    path = masks.path(item_id, view)
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path is not None else None
    if m is None:
        return None
    if m.shape != tuple(shape):
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m


def add_export_arguments(p) -> None:
    p.add_argument("--state", required=True, metavar="DIR", help="the rig's state directory")
    p.add_argument("--out", required=True, metavar="DATASET", help="new dataset folder")
    p.add_argument("--val-share", type=float, default=0.2, help="share of items put in split=val (default 0.2)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")


def run_export(args) -> int:
    rep = export_reviewed(args.state, args.out, args.val_share, args.overwrite)
    print(f"{args.out}: {rep.exported} reviewed item(s) exported "
          f"({sum(it.damaged for it in rep.dataset.items)} damaged, {rep.masks} damage mask(s)), "
          f"{rep.references} reference image(s), reviewers in {args.out}/reviews.csv; "
          f"{rep.skipped_no_crops} skipped without crops")
    return 0
