"""The rig's cache of product references: memory LRU bounded by ``cache_mb``, disk second level.

The decision path only ever calls :meth:`ProductCache.get` (a dict lookup under a lock):
a hit returns the entry; a miss returns None at once and queues a fetch. Everything
slow -- the disk second level, the reference store over the network, decoding --
happens in the cache's own fetch thread:

* ``prefetch(sku)`` when the upstream scan names the product (seconds before the item
  reaches the cameras), urgent; a miss at decision time, urgent too;
* ``warm(skus)`` at start (the site's most frequent products), in the background queue.

Memory holds entries while their accounted size (store.entry_nbytes: derived float32
copies included) stays under the bound; the least recently used go first, to the disk
level (``state_dir/gallery-cache/<model key>/v<version>/``, bounded by ``disk_mb``, oldest files
removed first). A fetch that fails (the store is down) is retried with back-off; the
request is kept, so nothing asked for is lost, and the counters say what happened.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

from .gallery import SkuEntry
from .store import entry_from_bytes, entry_nbytes, entry_to_bytes

log = logging.getLogger(__name__)


class ProductCache:
    def __init__(self, fetch: Callable[[str], SkuEntry | None], key: str, cache_mb: float, *,
                 disk_dir: str | Path | None = None, disk_mb: float = 2048.0, retry_s: float = 1.0,
                 max_retry_s: float = 10.0, observers: list | None = None):
        # observers: called (seconds, source: store|disk) after each fetch; a list shared with the
        # cache of the next gallery version
        self._fetch = fetch              # sku -> entry (None: not in the gallery); raises when the store is away
        self.key = key
        self.bound = int(cache_mb * 2**20)
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None  # this gallery version's folder
        self.disk_bound = int(disk_mb * 2**20)
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self._mem: OrderedDict[str, tuple[SkuEntry, int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._urgent: deque[str] = deque()
        self._background: deque[str] = deque()
        self._queued: set[str] = set()
        self._absent: set[str] = set()       # not in the gallery: asked once, not again
        self.seen: dict[str, int] = {}        # decisions per product since the last flush (warm start)
        self.counters = {"hits": 0, "misses": 0, "fetches": 0, "fetch_errors": 0, "disk_hits": 0,
                         "evictions": 0, "too_large": 0, "absent": 0, "prefetches": 0}
        self.store_up = True
        self.fetch_observers: list[Callable[[float, str], None]] = observers if observers is not None else []
        self._stop = threading.Event()
        self._disk_bytes = 0
        if self.disk_dir is not None:
            try:
                self.disk_dir.mkdir(parents=True, exist_ok=True)
                self._disk_bytes = sum(p.stat().st_size for p in self.disk_dir.glob("*.npz"))
            except OSError as exc:
                log.warning("gallery cache: disk level %s unusable (%s); memory only", self.disk_dir, exc)
                self.disk_dir = None
        self._thread = threading.Thread(target=self._run, name="gallery-fetch", daemon=True)
        self._thread.start()

    # ---- the decision path ------------------------------------------------------------------------
    def get(self, sku: str) -> SkuEntry | None:
        """The entry if in memory; otherwise None at once, and a fetch is queued (urgent)."""
        with self._lock:
            self.seen[sku] = self.seen.get(sku, 0) + 1
            hit = self._mem.get(sku)
            if hit is not None:
                self._mem.move_to_end(sku)
                self.counters["hits"] += 1
                return hit[0]
            self.counters["misses"] += 1
            self._queue_locked(sku, urgent=True)
            return None

    def peek(self, sku: str) -> SkuEntry | None:
        """The entry if in memory, without counting a look-up or queueing a fetch."""
        with self._lock:
            hit = self._mem.get(sku)
            return None if hit is None else hit[0]

    def prefetch(self, sku: str | None) -> None:
        """The upstream scan named ``sku``: fetch it now unless already in memory. Never blocks."""
        if not sku:
            return
        with self._lock:
            if sku not in self._mem:
                self.counters["prefetches"] += 1
                self._queue_locked(sku, urgent=True)

    def warm(self, skus: list[str]) -> None:
        """Background fetches (start-up): the site's frequent products, as far as the bound allows."""
        with self._lock:
            for s in skus:
                if s not in self._mem:
                    self._queue_locked(s, urgent=False)

    def put(self, sku: str, entry: SkuEntry) -> None:
        """An entry known here already (enrollment on this rig): into memory, replacing the old."""
        with self._lock:
            self._insert_locked(sku, entry)

    def _queue_locked(self, sku: str, urgent: bool) -> None:
        if sku in self._absent:
            return
        if sku in self._queued:
            if urgent and sku in self._background:
                self._background.remove(sku)
                self._urgent.append(sku)
            return
        self._queued.add(sku)
        (self._urgent if urgent else self._background).append(sku)
        self._wake.notify()

    # ---- the fetch thread -------------------------------------------------------------------------
    def _run(self) -> None:
        delay = self.retry_s
        while not self._stop.is_set():
            with self._lock:
                while not (self._urgent or self._background) and not self._stop.is_set():
                    self._wake.wait(0.5)
                if self._stop.is_set():
                    return
                urgent = bool(self._urgent)
                sku = (self._urgent or self._background)[0]
                if urgent or self.bytes < self.bound:
                    (self._urgent if urgent else self._background).popleft()
                else:  # warm start: the memory is full, the rest is not worth evicting for
                    self._background.clear()
                    self._queued = set(self._urgent)
                    continue
            try:
                entry = self._load(sku)
            except Exception as exc:  # noqa: BLE001 - the store away (or broken): retry, keep the request
                with self._lock:
                    self.counters["fetch_errors"] += 1
                    if self.store_up:
                        log.warning("gallery cache: fetching %s failed (%s); retrying every <= %.1f s, "
                                    "decisions go on without it", sku, str(exc).strip()[:200], self.max_retry_s)
                    self.store_up = False
                    (self._urgent if urgent else self._background).appendleft(sku)
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_retry_s)
                continue
            delay = self.retry_s
            with self._lock:
                if not self.store_up:
                    log.warning("gallery cache: the reference store answers again")
                self.store_up = True
                self._queued.discard(sku)
                if entry is None:
                    self._absent.add(sku)
                    self.counters["absent"] += 1
                else:
                    self._insert_locked(sku, entry)

    def _load(self, sku: str) -> SkuEntry | None:
        t0 = time.monotonic()
        path = self._disk_path(sku)
        if path is not None and path.is_file():
            try:
                entry = entry_from_bytes(path.read_bytes(), self.key, str(path))
                os.utime(path)
                self.counters["disk_hits"] += 1
                self._observe(time.monotonic() - t0, "disk")
                return entry
            except Exception as exc:  # noqa: BLE001 - a damaged cache file is dropped and fetched again
                log.warning("gallery cache: %s unusable (%s); fetching again", path, exc)
                path.unlink(missing_ok=True)
        entry = self._fetch(sku)
        self.counters["fetches"] += 1
        self._observe(time.monotonic() - t0, "store")
        if entry is not None:
            self._to_disk(sku, entry)
        return entry

    def _observe(self, seconds: float, source: str) -> None:
        for fn in self.fetch_observers:
            fn(seconds, source)

    def _insert_locked(self, sku: str, entry: SkuEntry) -> None:
        n = entry_nbytes(entry)
        if n > self.bound:
            self.counters["too_large"] += 1
            return
        old = self._mem.pop(sku, None)
        if old is not None:
            self.bytes -= old[1]
        self._mem[sku] = (entry, n)
        self.bytes += n
        while self.bytes > self.bound:
            _, (_, nb) = self._mem.popitem(last=False)
            self.bytes -= nb
            self.counters["evictions"] += 1

    # ---- disk level (fetch thread only) ------------------------------------------------------------
    def _disk_path(self, sku: str) -> Path | None:
        if self.disk_dir is None:
            return None
        return self.disk_dir / (hashlib.sha1(sku.encode()).hexdigest() + ".npz")

    def _to_disk(self, sku: str, entry: SkuEntry) -> None:
        path = self._disk_path(sku)
        if path is None:
            return
        try:
            data = entry_to_bytes(entry, self.key)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._disk_bytes += len(data)
            if self._disk_bytes > self.disk_bound:
                self._trim_disk()
        except OSError as exc:
            log.warning("gallery cache: cannot write %s (%s)", path, exc)

    def _trim_disk(self) -> None:
        files = sorted(self.disk_dir.glob("*.npz"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.disk_bound * 0.9:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
        self._disk_bytes = total

    # ---- reporting, closing ------------------------------------------------------------------------
    def take_seen(self) -> dict[str, int]:
        with self._lock:
            seen, self.seen = self.seen, {}
        return seen

    def give_back_seen(self, seen: dict[str, int]) -> None:
        """A flush that failed: the counts go back, nothing is lost."""
        with self._lock:
            for s, n in seen.items():
                self.seen[s] = self.seen.get(s, 0) + n

    def stats(self) -> dict:
        with self._lock:
            c = dict(self.counters)
            c.update(bytes=self.bytes, bound=self.bound, entries=len(self._mem),
                     pending=len(self._urgent) + len(self._background), store_up=self.store_up,
                     disk_bytes=self._disk_bytes)
        looked = c["hits"] + c["misses"]
        c["hit_rate"] = c["hits"] / looked if looked else float("nan")
        return c

    def wait_idle(self, timeout: float) -> bool:
        """Tests, warm start: wait until no fetch is queued."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        self._thread.join(timeout=5.0)


def safe_name(key: str) -> str:
    """A model key as a folder name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
