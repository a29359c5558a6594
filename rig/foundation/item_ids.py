"""Item ids that never repeat: across restarts, clock changes and runs of any length.

An id is a u64 (serial protocol version 2)::

    bits 63..20  milliseconds since the Unix epoch (44 bits: until the year 2527)
    bits 19..0   a counter within that millisecond (1,048,576 per ms)

``next()`` returns ``max(now_ms << 20, last + 1)``: strictly increasing within
a run however many items it sees (a burst borrows from the next millisecond,
so ids never fall behind by more than the burst), and larger than any id of
an earlier run as long as the clock does not go back. For a clock set back
(an RTC lost, a bad NTP step) the last id issued is kept in a high-water file
and the next run starts above it. The file is best effort: a full or
read-only state disk costs that protection against a clock set back, never
an id, and never a decision.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

COUNTER_BITS = 20
MAX_ID = 2**64 - 1
HWM_NAME = "item_id.hwm"
#: persist the high-water mark this far ahead, so the file is written about once a minute
_RESERVE_MS = 60_000


def id_time(item_id: int) -> float:
    """Epoch seconds an id was issued at (to the millisecond, or later in a burst)."""
    return (item_id >> COUNTER_BITS) / 1000.0


class ItemIds:
    """Thread-safe source of item ids; ``state_dir`` (optional) holds the high-water mark."""

    def __init__(self, state_dir: str | Path | None = None, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._path = Path(state_dir) / HWM_NAME if state_dir is not None else None
        self._last = self._read_hwm()
        self._reserved = self._last
        self.hwm_errors = 0

    def _now_id(self) -> int:
        return int(self._clock() * 1000.0) << COUNTER_BITS

    def next(self) -> int:
        with self._lock:
            nid = max(self._now_id(), self._last + 1)
            if nid > MAX_ID:  # the year 2527, or a corrupted high-water mark
                raise OverflowError("item ids exhausted (u64)")
            self._last = nid
            if nid > self._reserved:
                self._reserve(nid)
            return nid

    # -- the high-water file --------------------------------------------------------------------

    def _read_hwm(self) -> int:
        if self._path is None:
            return 0
        try:
            text = self._path.read_text(encoding="ascii").strip()
            value = int(text)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("item id high-water mark %s unreadable (%s); ids start from the clock", self._path, exc)
            return 0
        if not 0 <= value <= MAX_ID:
            log.warning("item id high-water mark %s out of range; ids start from the clock", self._path)
            return 0
        if value > self._now_id() + (_RESERVE_MS << COUNTER_BITS):
            log.warning("item ids continue above the high-water mark in %s: the clock is behind the last run's",
                        self._path)
        return value

    def _reserve(self, nid: int) -> None:
        """Write a mark a minute ahead (caller holds the lock); failures are counted and logged."""
        mark = nid + (_RESERVE_MS << COUNTER_BITS)
        self._reserved = mark  # even when the write fails: retry a minute later, not on every item
        if self._path is None:
            return
        tmp = self._path.with_name(HWM_NAME + ".tmp")
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{mark}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except OSError as exc:
            self.hwm_errors += 1
            log.warning("item id high-water mark not saved in %s (%s): ids stay unique unless the clock "
                        "is also set back", self._path, exc)
