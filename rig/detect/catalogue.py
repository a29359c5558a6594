"""A gallery that lives in the reference store: what the Scorer uses when ``gallery.store`` is set.

:class:`CatalogueGallery` answers the Scorer like gallery.Gallery does, with two
differences: identification searches the ANN index (ann.py) over every product of
the store's current gallery for this model, and a product's references come from
the cache (cache.py). ``entry(sku)`` is None while they are being fetched: the
Scorer then scores without the reference channels and says so (``refs_missing``).

Opening: connect, check that the store holds a gallery for this model (else a clear
ModelMismatch), stream every product's prototypes into the index (the site's products
when the store lists them: ``site_products``; a product outside the list is an unknown
SKU to this rig), snapshot the index
into the state directory, and warm the cache with the site's most frequent products.
When the store cannot be reached at start, the last snapshot is used (the rig starts
and decides; products come from the disk cache until the store answers again).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..foundation.errors import DeviceError, ModelError
from .ann import AnnIndex
from .cache import ProductCache, safe_name
from .gallery import SkuEntry
from .store import ReferenceStore

log = logging.getLogger(__name__)

SEEN_FLUSH_S = 30.0


class _Known(Mapping):
    """``gallery.skus`` for the Scorer: membership is the catalogue's; items come from the cache."""

    def __init__(self, cat: CatalogueGallery):
        self.cat = cat

    def __contains__(self, sku) -> bool:
        return sku in self.cat.index

    def __getitem__(self, sku) -> SkuEntry:
        e = self.cat.entry(sku)
        if e is None:
            raise KeyError(sku)
        return e

    def __iter__(self):
        return iter(self.cat.index.skus)

    def __len__(self) -> int:
        return len(self.cat.index)


class CatalogueGallery:
    def __init__(self, url: str, key: str, *, cache_mb: float = 512.0, disk_mb: float = 2048.0,
                 state_dir: str | Path | None = None, site: str = "default", warm_products: int = 1000,
                 connect_timeout_s: float = 3.0, nprobe: int = 32, snapshot: bool = True):
        self.url, self.key, self.site = url, key, site
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        snap = Path(state_dir) / "gallery-cache" / safe_name(key) if state_dir is not None else None
        try:
            store = self._store()
            self.version_n = store.require_model(key)  # ModelMismatch: raised, never worked around
            self.meta = store.gallery_meta(key, self.version_n)
            self.index = AnnIndex(int(self.meta.get("embedding_dim", 128)), nprobe=nprobe)
            self.index.build(list(store.catalogue(key, self.version_n, site)))
            if snap is not None and snapshot:
                self._save_snapshot(snap)
            frequent = store.frequent(site, warm_products) if warm_products else []
        except DeviceError as exc:
            if snap is None or not (snap / "index.faiss").is_file():
                raise DeviceError(f"{exc}; and no index snapshot in {snap} to start from") from None
            log.error("%s: starting from the index snapshot in %s (version %s); products come from the disk "
                      "cache until the store answers", exc, snap, "?")
            self._load_snapshot(snap, nprobe)
            frequent = []
        self.version = f"store:{self.version_n}"
        self.note = f"reference store, model {key}"
        self.snap, self.cache_mb, self.disk_mb, self.nprobe = snap, cache_mb, disk_mb, nprobe
        self.cache = self._new_cache(self.version_n, [])
        self.cache.warm(frequent)
        self.skus = _Known(self)
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="gallery-seen", daemon=True)
        self._flusher.start()

    def _new_cache(self, version: int, observers: list) -> ProductCache:
        disk = self.snap / f"v{version}" if self.snap is not None else None
        return ProductCache(lambda sku, v=version: self._fetch(sku, v), self.key, self.cache_mb, disk_dir=disk,
                            disk_mb=self.disk_mb, observers=observers)

    # ---- store access (one connection per thread, reopened after a failure) -------------------------
    def _store(self) -> ReferenceStore:
        s = getattr(self._local, "store", None)
        if s is None or s.conn.closed or s.conn.broken:
            s = ReferenceStore(self.url, connect_timeout_s=self.connect_timeout_s, statement_timeout_ms=5000)
            self._local.store = s
        return s

    def _fetch(self, sku: str, version: int) -> SkuEntry | None:
        try:
            return self._store().fetch(self.key, version, sku)
        except ModelError:
            raise
        except Exception:
            s = getattr(self._local, "store", None)
            if s is not None:
                s.close()
            self._local.store = None
            raise

    # ---- what the Scorer asks ------------------------------------------------------------------------
    def entry(self, sku: str) -> SkuEntry | None:
        return self.cache.get(sku)

    def prefetch(self, sku: str | None) -> None:
        self.cache.prefetch(sku)

    def make_index(self) -> CatalogueGallery:
        """The Scorer's identification index: this object, so that a new gallery version's index
        (``refresh``) is used from the next item on."""
        return self

    def identify(self, embeddings: list[np.ndarray], temperature: float) -> tuple[str, float, float]:
        return self.index.identify(embeddings, temperature)

    def default_scales(self) -> tuple[float, float]:
        p, g = self.meta.get("default_scales", (1.0, 0.05))
        return float(p), float(g)

    def scales(self, sku: str) -> tuple[float, float]:
        dp, dg = self.default_scales()
        e = self.cache.peek(sku)
        p = e.patch_scale if e is not None and np.isfinite(e.patch_scale) else dp
        g = e.global_scale if e is not None and np.isfinite(e.global_scale) else dg
        return max(p, 1e-6), max(g, 1e-4)

    def disc_shift(self, sku: str) -> float:
        e = self.cache.peek(sku)
        if e is None or not (np.isfinite(e.ref_disc) and np.isfinite(e.ref_disc_base)):
            return 0.0
        return max(0.0, e.ref_disc - e.ref_disc_base)

    def geo_scales(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in (self.meta.get("geo_scales") or {}).items()}

    def nbytes(self) -> int:
        return self.cache.stats()["bytes"]

    # ---- enrollment on this rig -----------------------------------------------------------------------
    def enrolled(self, pid: int, sku: str, entry: SkuEntry, protos: np.ndarray) -> None:
        """A product added or replaced: into the index (incrementally) and the cache."""
        self.index.add([(pid, sku, protos)])
        self.cache.put(sku, entry)

    # ---- background ----------------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self._stop.wait(SEEN_FLUSH_S):
            self.flush_seen()
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the store away: the rig goes on with its version
                self._local.store = None
                log.debug("gallery: version check failed (%s)", exc)

    def refresh(self) -> bool:
        """Follow the store's current gallery version (a push, an enrollment elsewhere, a rollback):
        a new index and cache are built here, off the decision path, then swapped in at once.
        Returns whether the version changed."""
        store = self._store()
        version = store.require_model(self.key)
        if version == self.version_n:
            return False
        meta = store.gallery_meta(self.key, version)
        index = AnnIndex(int(meta.get("embedding_dim", 128)), nprobe=self.nprobe)
        index.build(list(store.catalogue(self.key, version, self.site)))
        old_cache, old_version = self.cache, self.version_n
        cache = self._new_cache(version, old_cache.fetch_observers)
        cache.warm(store.frequent(self.site, 2 * old_cache.stats()["entries"] + 10))
        self.index, self.meta, self.cache, self.version_n = index, meta, cache, version
        self.version = f"store:{version}"
        seen = old_cache.take_seen()
        old_cache.close()
        self.cache.give_back_seen(seen)
        if self.snap is not None:
            self._save_snapshot(self.snap)
            shutil.rmtree(self.snap / f"v{old_version}", ignore_errors=True)
        log.warning("gallery: store version %d is current (was %d): %d products, %s", version, old_version,
                    len(index), index.kind)
        return True

    def flush_seen(self) -> bool:
        seen = self.cache.take_seen()
        if not seen:
            return True
        for attempt in (1, 2):  # a connection that broke while the store was away is seen at first use
            try:
                self._store().add_seen(self.site, seen)
                return True
            except Exception as exc:  # noqa: BLE001 - the store away: the counts wait for the next flush
                self._local.store = None
                log.debug("gallery: product counts not flushed (attempt %d: %s)", attempt, exc)
        self.cache.give_back_seen(seen)
        return False

    def _save_snapshot(self, snap: Path) -> None:
        try:
            snap.mkdir(parents=True, exist_ok=True)
            self.index.save(snap / "index.faiss.tmp")
            (snap / "index.faiss.tmp").replace(snap / "index.faiss")
            (snap / "index.json").write_text(json.dumps({"version": self.version_n, "meta": self.meta,
                                                         "ids": self.index.id_of}))
        except OSError as exc:
            log.warning("gallery: index snapshot not written to %s (%s)", snap, exc)

    def _load_snapshot(self, snap: Path, nprobe: int) -> None:
        try:
            d = json.loads((snap / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{snap / 'index.json'}: unreadable index snapshot ({exc})") from None
        self.version_n, self.meta = int(d["version"]), dict(d["meta"])
        self.index = AnnIndex(int(self.meta.get("embedding_dim", 128)), nprobe=nprobe)
        self.index.load(snap / "index.faiss", {k: int(v) for k, v in d["ids"].items()})

    def stats(self) -> dict:
        return {**self.cache.stats(), "products": len(self.index), "index": self.index.kind}

    def close(self) -> None:
        self._stop.set()
        self.flush_seen()
        self.cache.close()
        s = getattr(self._local, "store", None)
        if s is not None:
            s.close()

