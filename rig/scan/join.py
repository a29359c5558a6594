"""Scans in, items out: :class:`ExpectedProducts` joins an upstream scan to a captured item.

A scan read at host time ``t`` (monotonic) means the item was at the scanner,
``distance_m`` upstream of the tunnel centre, at ``t``: it reaches the centre at
``t + distance_m / speed``. The trigger captures an item at ``x`` metres past
the centre at ``host_time``, so it was at the centre at ``host_time - x / speed``.
The scan nearest in belt distance, within ``match_window_m``, is that item's; a
scan matches one item only. Scans no item claimed are dropped once they are
well past the tunnel (counted as ``unmatched``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from .serial_source import SerialScanner

log = logging.getLogger(__name__)

#: what a scanner sends when it saw a label it could not read (and what the WMS may send)
NOREAD = "NOREAD"


@dataclass(frozen=True)
class Scan:
    """One upstream reading. ``sku`` None: the scanner saw the item but could not read its code."""

    sku: str | None
    at: float  # host monotonic time the item was at the scanner
    raw: str = ""
    source: str = ""

    @property
    def readable(self) -> bool:
        return self.sku is not None


class ExpectedProducts:
    def __init__(self, distance_m: float, speed_mps: float, match_window_m: float, codes: dict | None = None):
        self.distance_m = float(distance_m)
        self.speed = float(speed_mps)
        self.window_s = float(match_window_m) / self.speed
        self.codes = dict(codes or {})
        self._scans: deque[Scan] = deque(maxlen=4096)
        self._lock = threading.Lock()
        self.counters = {"scans": 0, "unreadable": 0, "matched": 0, "unmatched": 0, "no_scan": 0}
        self.sources: list = []
        # called with each scan as it arrives (the gallery cache prefetches the product); must not block
        self.listeners: list = []

    # ---- input (scanner threads) -------------------------------------------
    def add_line(self, line: str, at: float | None = None, source: str = "") -> Scan:
        """One line from a scanner: a SKU, a code (mapped through ``codes``), or a no-read."""
        at = time.monotonic() if at is None else at
        text = line.strip()
        unreadable = (not text or text.upper() == NOREAD or not text.isprintable()
                      or any(c.isspace() for c in text))
        return self.add(Scan(None if unreadable else self.codes.get(text, text), at, line, source))

    def add(self, scan: Scan) -> Scan:
        with self._lock:
            self._scans.append(scan)
            self.counters["scans"] += 1
            if not scan.readable:
                self.counters["unreadable"] += 1
        for fn in self.listeners:
            try:
                fn(scan)
            except Exception:  # a listener's failure must not lose the scan
                log.exception("scan listener %r failed", fn)
        return scan

    # ---- join (the pipeline's trigger thread) -------------------------------
    def match(self, host_time: float, x_m: float = 0.0) -> Scan | None:
        """The scan of the item captured at ``host_time`` at ``x_m`` past the tunnel centre (None: none)."""
        at_centre = host_time - x_m / self.speed
        travel = self.distance_m / self.speed
        with self._lock:
            best, best_dt = None, self.window_s
            for s in self._scans:
                dt = abs(s.at + travel - at_centre)
                if dt <= best_dt:
                    best, best_dt = s, dt
            if best is not None:
                self._scans.remove(best)
                self.counters["matched"] += 1
            else:
                self.counters["no_scan"] += 1
            # scans whose item would be well past the tunnel belong to no item
            while self._scans and self._scans[0].at + travel < at_centre - 4 * self.window_s - 1.0:
                old = self._scans.popleft()
                self.counters["unmatched"] += 1
                log.warning("scan %r matched no item (no item reached the tunnel where it predicted)", old.raw)
        return best

    def pending(self) -> int:
        with self._lock:
            return len(self._scans)

    def close(self) -> None:
        for src in self.sources:
            src.close()


def open_scan_source(url: str, expected: ExpectedProducts, *, baud: int = 9600):
    """A serial scanner on ``url`` (a device path or any pyserial URL) feeding ``expected``."""
    src = SerialScanner(url, expected, baud=baud)
    expected.sources.append(src)
    return src
