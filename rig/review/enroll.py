"""The alive gallery: enroll reviewed new-packaging images as references, list versions, roll back.

The gallery itself (versioned reference features, rig/detect/gallery.py and
enroll.py) belongs to the models work; this module only chooses which
reviewed images to enroll and records each action in the event log's
``gallery_events`` table, which also restarts that SKU's drift baseline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..detect import enroll as detect_enroll
from ..detect import gallery
from ..foundation.errors import ModelError
from .store import BadLabelError, ReviewStore

log = logging.getLogger(__name__)

#: verdicts whose images show the product as it should look now
ENROLLABLE = ("packaging_changed", "not_damaged")


def enrollable_images(store: ReviewStore, sku: str) -> tuple[list[str], list[Path]]:
    """Item ids and crop paths of the SKU reviewed as fine since its last enrollment (its current look)."""
    last = store.connection.execute(
        "SELECT MAX(at) FROM gallery_events WHERE sku = ? AND action = 'enroll'", (sku,)).fetchone()[0]
    ids, paths = [], []
    for row in store.reviewed():
        if (row["sku_pred"] != sku or row["label"] not in ENROLLABLE or row["crops_deleted"]
                or (last is not None and (row["labelled_at"] or 0) <= last)):
            continue
        for view in row["views"]:
            path = row["crops"].get(view, {}).get("rgb")
            if path and Path(path).is_file():
                paths.append(Path(path))
                if row["id"] not in ids:
                    ids.append(row["id"])
    return ids, paths


def enroll_reviewed(store: ReviewStore, model_dir: Path, sku: str) -> dict:
    """Add the SKU's reviewed crops to its references (old references kept where still readable)."""
    ids, paths = enrollable_images(store, sku)
    if not paths:
        raise BadLabelError(f"no reviewed 'not damaged' or 'packaging changed' images of SKU {sku!r} "
                            "since its last enrollment: review some diverted items first")
    version = detect_enroll.enroll(model_dir, sku, paths, replace=False,
                                note=f"review: {len(ids)} reviewed item(s) of {sku} enrolled")
    store.record_gallery_event(sku, "enroll", str(version), ids)
    log.info("enrolled %d image(s) of %d item(s) for SKU %s as gallery version %s",
             len(paths), len(ids), sku, version)
    return {"sku": sku, "version": str(version), "enrolled": len(paths), "items": ids}


def versions(model_dir: Path) -> list[dict]:
    """Every stored gallery version, oldest first (``current`` marks the one in use)."""
    return gallery.list_versions(model_dir)


def rollback(store: ReviewStore | None, model_dir: Path, version: str | None = None) -> dict:
    """Make ``version`` current again; without one, the current version's parent (undo the last change)."""
    g = gallery
    if version is None:
        cur = [v for v in g.list_versions(model_dir) if v["current"]]
        if not cur or not cur[0].get("parent"):
            raise ModelError(f"{model_dir}: the current gallery version has no earlier version to roll back to")
        version = cur[0]["parent"]
    current = g.rollback(model_dir, version)
    if store is not None:
        store.record_gallery_event("*", "rollback", str(current), [])
    return {"version": str(current)}
