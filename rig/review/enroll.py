"""The alive gallery: enroll reviewed new-packaging images as references, list versions, roll back.

The gallery itself (versioned reference features, rig/detect/gallery.py and
enroll.py) belongs to the models work; this module only chooses which
reviewed images to enroll and records each action in the event log's
``gallery_events`` table, which also restarts that SKU's drift baseline.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ..detect import enroll as detect_enroll
from ..detect import gallery
from ..detect.store import write_enrollment
from ..foundation.errors import ModelError, RigError
from .store import BadLabelError, ReviewStore

log = logging.getLogger(__name__)

#: verdicts whose images show the product as it should look now
ENROLLABLE = ("packaging_changed", "not_damaged")
_ENROLL_LOCK = threading.Lock()


def enrolled_items(store: ReviewStore, sku: str) -> set[str]:
    """Ids of the SKU's reviewed items already enrolled (each goes into the gallery once)."""
    done: set[str] = set()
    for (items,) in store.connection.execute(
            "SELECT items FROM gallery_events WHERE sku = ? AND action = 'enroll'", (sku,)):
        try:
            done.update(str(i) for i in json.loads(items or "[]"))
        except ValueError:
            continue
    return done


def enrollable_images(store: ReviewStore, sku: str) -> tuple[list[str], list[Path]]:
    """Item ids and crop paths of the SKU reviewed as fine and not enrolled yet (its current look)."""
    last = store.connection.execute(
        "SELECT MAX(at) FROM gallery_events WHERE sku = ? AND action = 'enroll'", (sku,)).fetchone()[0]
    done = enrolled_items(store, sku)
    ids, paths = [], []
    for row in store.reviewed():
        if (row["sku_pred"] != sku or row["label"] not in ENROLLABLE or row["crops_deleted"]
                or row["id"] in done or (last is not None and (row["labelled_at"] or 0) <= last)):
            continue
        for view in row["views"]:
            path = row["crops"].get(view, {}).get("rgb")
            if path and Path(path).is_file():
                paths.append(Path(path))
                if row["id"] not in ids:
                    ids.append(row["id"])
    return ids, paths


def enroll_reviewed(store: ReviewStore, model_dir: Path, sku: str, catalogue: str | None = None) -> dict:
    """Add the SKU's reviewed crops to its references; every existing reference is kept.

    Idempotent per reviewed item: an item is enrolled once. A repeated request (a double
    submission) with nothing new answers with the last enrollment and changes nothing."""
    with _ENROLL_LOCK:  # two submissions at once must not both enroll the same crops
        ids, paths = enrollable_images(store, sku)
        if not paths:
            row = store.connection.execute(
                "SELECT version FROM gallery_events WHERE sku = ? AND action = 'enroll' ORDER BY at DESC LIMIT 1",
                (sku,)).fetchone()
            if row is not None:
                return {"sku": sku, "version": str(row[0]), "enrolled": 0, "items": [],
                        "note": "every reviewed item of this SKU is enrolled already"}
            raise BadLabelError(f"no reviewed 'not damaged' or 'packaging changed' images of SKU {sku!r} "
                                "since its last enrollment: review some diverted items first")
        version = detect_enroll.enroll(model_dir, sku, paths, replace=False,
                                        note=f"review: {len(ids)} reviewed item(s) of {sku} enrolled")
        store.record_gallery_event(sku, "enroll", str(version), ids)
    log.info("enrolled %d image(s) of %d item(s) for SKU %s as gallery version %s",
             len(paths), len(ids), sku, version)
    out = {"sku": sku, "version": str(version), "enrolled": len(paths), "items": ids}
    if catalogue:  # the site's reference store (config gallery.store): the other rigs get it too
        try:
            out["store_version"] = write_enrollment(catalogue, model_dir, [sku], {sku: paths},
                                                    f"review: {len(ids)} reviewed item(s) of {sku}")[0]
        except RigError as exc:
            log.error("SKU %s enrolled on this rig, but the reference store refused it: %s", sku, exc)
            out["store_error"] = str(exc)
    return out


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
