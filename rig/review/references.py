"""The product's reference image to show beside a crop: what the SKU should look like.

Looked up, first hit wins, for (SKU, view):

1. ``--references DIR``: ``DIR/SKU/*.png`` (a dataset's ``references`` folder);
2. the model's gallery: the SKU's reference image files listed as its sources
   (those still on disk);
3. the event log: the newest crop of that SKU and view a reviewer marked
   'not damaged' or 'packaging changed'.

Within 1 and 2 a file named for the view (``*_VIEW.png``) is preferred.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from ..dataset import IMAGE_EXTS
from ..foundation.errors import RigError
from .store import ReviewStore

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


class References:
    def __init__(self, store: ReviewStore, model_dir: Path | None = None, folder: Path | None = None):
        self.store = store
        self.model_dir = model_dir
        self.folder = folder
        self._gallery: dict[str, list[Path]] | None = None
        self._lock = threading.Lock()

    def _gallery_sources(self) -> dict[str, list[Path]]:
        with self._lock:
            if self._gallery is None:
                self._gallery = {}
                if self.model_dir is not None:
                    import yaml

                    from ..detect import gallery

                    try:
                        version = gallery.current_version(self.model_dir)
                        meta = yaml.safe_load((self.model_dir / "gallery" / version / "meta.yaml").read_text())
                    except (OSError, ValueError, yaml.YAMLError, RigError):  # no gallery: no references from it
                        meta = {}
                    for sku, entry in (meta.get("skus") or {}).items():
                        files = [Path(s) for s in entry.get("sources") or [] if str(s).lower().endswith(IMAGE_EXTS)]
                        self._gallery[str(sku)] = [p for p in files if p.is_absolute() and p.is_file()]
            return self._gallery

    @staticmethod
    def _pick(files: list[Path], view: str) -> Path | None:
        for p in files:
            if p.stem.endswith("_" + view) or p.stem == view:
                return p
        return files[0] if files else None

    def find(self, sku: str, view: str) -> Path | None:
        if not _NAME.match(sku) or not _NAME.match(view):
            return None
        if self.folder is not None and (self.folder / sku).is_dir():
            files = sorted(p for p in (self.folder / sku).iterdir()
                           if p.suffix.lower() in IMAGE_EXTS and not p.stem.endswith("_depth"))
            hit = self._pick(files, view)
            if hit is not None:
                return hit
        hit = self._pick(self._gallery_sources().get(sku, []), view)
        if hit is not None:
            return hit
        for row in self.store.confirmed_good(sku, limit=20):
            path = row["crops"].get(view, {}).get("rgb")
            if path and not row["crops_deleted"] and Path(path).is_file():
                return Path(path)
        return None
