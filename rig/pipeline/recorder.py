"""Decide first, record after: the event log written by its own thread from a bounded queue.

The decision path only *enqueues* (no disk, no lock held by another process,
no fsync): ``record``, ``mark_acked`` and ``mark_result`` return at once. The
recorder thread opens the event log (retrying while the state disk is full,
read-only or locked, so the rig starts without it), writes rows in order and,
when a write fails, keeps the job and retries it with a back-off until it
succeeds. Nothing is dropped while the queue has room; the queue is bounded:

* crops (JPEG/PNG, the big part) are kept in memory only up to
  ``crop_budget_bytes`` of queued records; past that a record is queued
  without its pictures (counted in ``crops_skipped``);
* past ``max_jobs`` a new *record* is refused and counted in
  ``records_dropped`` (the gap is in ``rig status`` and the metrics); a
  divert result or acknowledgement is always queued (they are small, and an
  acknowledged divert must never be lost), and the recorder then drops the
  oldest unwritten rows' pictures, not rows.

``stats()`` is what the status file, sd_notify STATUS and the metrics show.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..events import EventLog, EventLogError, UnknownItemError
from ..foundation.errors import RigError

log = logging.getLogger(__name__)


class Recorder:
    """The EventLog's front: same methods as EventLog for the runtime, never blocking."""

    def __init__(self, open_log, max_jobs: int = 20_000, crop_budget_bytes: int = 64 * 2**20,
                 retry_min_s: float = 0.2, retry_max_s: float = 5.0, name: str = "recorder"):
        """``open_log()`` returns an EventLog (called on the recorder's thread, retried until it works)."""
        self._open_log = open_log
        self.log = None
        self.max_jobs = max_jobs
        self.crop_budget = crop_budget_bytes
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._jobs: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._crop_bytes = 0
        self._closing = False
        self.counters = {"queued": 0, "written": 0, "retries": 0, "records_dropped": 0, "crops_skipped": 0,
                         "unknown_item": 0, "open_failures": 0}
        self.last_error: str | None = None
        self.error_since: float | None = None  # monotonic time the current failure began
        # controller answers whose row is not queued yet (the DIVERT goes out first, the row is
        # queued once the decision's record is built): applied as soon as that row is written
        self._parked: dict[str, list] = {}
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the runtime's side (never blocks on disk) ----------------------------------------------

    def record(self, rec) -> bool:
        """Queue one item's row (and its crops while within budget); False when it had to be dropped."""
        nbytes = sum(v["rgb"].nbytes for v in rec.views.values() if v.get("rgb") is not None)
        with self._cv:
            if len(self._jobs) >= self.max_jobs:
                self.counters["records_dropped"] += 1
                if self.counters["records_dropped"] in (1, 10, 100) or self.counters["records_dropped"] % 1000 == 0:
                    log.error("event log backlog full (%d jobs): %d record(s) dropped so far; decisions go on",
                              len(self._jobs), self.counters["records_dropped"])
                return False
            if rec.views and self._crop_bytes + nbytes > self.crop_budget:
                rec = replace(rec, views={})
                nbytes = 0
                self.counters["crops_skipped"] += 1
            self._crop_bytes += nbytes
            self._push(("record", rec, nbytes))
        return True

    def mark_acked(self, item_id: str, acked_at: float) -> None:
        with self._cv:
            self._push(("acked", item_id, acked_at, 0))

    def mark_result(self, item_id: str, acked: bool, reason: str | None) -> None:
        with self._cv:
            self._push(("result", item_id, acked, reason, 0))

    def _push(self, job) -> None:
        self._jobs.append(job)
        self.counters["queued"] += 1
        self._cv.notify()

    # -- state ----------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        with self._cv:
            return len(self._jobs)

    @property
    def degraded(self) -> bool:
        return self.last_error is not None

    def stats(self) -> dict:
        with self._cv:
            out = dict(self.counters, backlog=len(self._jobs), crop_bytes_queued=self._crop_bytes)
        out["open"] = self.log is not None
        out["error"] = self.last_error
        out["error_for_s"] = round(time.monotonic() - self.error_since, 1) if self.error_since else 0.0
        return out

    def flush(self, timeout: float) -> bool:
        """Wait until every queued job is written (True) or ``timeout`` passes (False)."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._jobs or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout``), then close the event log; what is left is reported."""
        self.flush(timeout)
        with self._cv:
            self._closing = True
            left = len(self._jobs)
            self._cv.notify_all()
        self._thread.join(timeout=max(1.0, timeout))
        if left:
            log.error("event log closed with %d job(s) unwritten (%s)", left, self.last_error or "timeout")
        if self.log is not None:
            try:
                self.log.close()
            except Exception as exc:  # noqa: BLE001 - closing must not hide the report above
                log.warning("event log close: %s", exc)

    # -- the recorder thread --------------------------------------------------------------------

    _busy = False

    def _run(self) -> None:
        delay = self.retry_min_s
        while True:
            if self.log is None and not self._open():
                # opened at once, not at the first item, so a full or read-only disk shows at start
                with self._cv:
                    if self._closing:
                        return
                    self._cv.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            with self._cv:
                while not self._jobs and not self._closing:
                    self._cv.wait(0.5)
                if self._closing:
                    return
                job = self._jobs[0]
                self._busy = True
            try:
                ok = self._do(job)
            except Exception:
                log.exception("event log job %s failed; skipped", job[0])
                self.counters["records_dropped" if job[0] == "record" else "unknown_item"] += 1
                ok = _SKIPPED  # a job that cannot ever succeed is dropped, not retried forever
            with self._cv:
                self._busy = False
                if ok is _REQUEUE:
                    # an answer from the controller that overtook its own row (the DIVERT goes out
                    # before the row is queued): try it again after what is queued now
                    self._jobs.popleft()
                    self._jobs.append((*job[:-1], job[-1] + 1))
                    continue
                if ok:
                    self._jobs.popleft()
                    if job[0] == "record":
                        self._crop_bytes -= job[2]
                        for _, parked in reversed(self._parked.pop(getattr(job[1], "id", None), [])):
                            self._jobs.appendleft((*parked[:-1], 4))  # its row is there now
                    self._cv.notify_all()
            if ok:
                if self.last_error is not None and ok is not _SKIPPED:
                    log.warning("event log writable again after %.1f s; %d job(s) to catch up",
                                time.monotonic() - self.error_since, self.backlog)
                    self.last_error, self.error_since = None, None
                delay = self.retry_min_s
            else:
                with self._cv:
                    self.counters["retries"] += 1
                    if not self._closing:
                        self._cv.wait(delay)
                delay = min(delay * 2, self.retry_max_s)

    def _park(self, job) -> None:
        """Hold an update for a row not written yet (lock held); updates parked longer than
        PARK_S, or beyond PARK_MAX rows, are given up and counted as unknown items."""
        now = time.monotonic()
        self._parked.setdefault(job[1], []).append((now, job))
        stale = [k for k, jobs in self._parked.items() if now - jobs[0][0] > PARK_S]
        while len(self._parked) - len(stale) > PARK_MAX:
            stale.append(next(k for k in self._parked if k not in stale))
        for k in stale:
            for t, j in self._parked.pop(k):
                self.counters["unknown_item"] += 1
                log.warning("event log: no row %s for its %s update after %.0f s", k, j[0], now - t)

    def _failed(self, why: str) -> None:
        if self.last_error is None:
            self.error_since = time.monotonic()
            log.error("event log not writable: %s; decisions go on, rows wait in memory (backlog %d)",
                      why, self.backlog)
        self.last_error = why

    def _open(self) -> bool:
        try:
            self.log = self._open_log()
        except (RigError, OSError, sqlite3.Error) as exc:
            self.counters["open_failures"] += 1
            self._failed(str(exc))
            return False
        if self.last_error is not None:
            log.warning("event log open again after %.1f s", time.monotonic() - self.error_since)
            self.last_error, self.error_since = None, None
        return True

    def _do(self, job) -> bool | object:
        """Run one job; True when done, False to retry later."""
        kind = job[0]
        try:
            if kind == "record":
                self.log.record(job[1])
            elif kind == "acked":
                self.log.mark_acked(job[1], job[2])
            else:
                self.log.mark_result(job[1], job[2], job[3])
        except UnknownItemError as exc:
            if job[-1] < 3:
                time.sleep(0.002 * (job[-1] + 1))
                return _REQUEUE
            if job[-1] < 4:  # 4: an update let out of the parking, whose row was just written
                # its row may still be on its way: park the update until that row is written
                with self._cv:
                    self._park(job)
                return _SKIPPED
            # the row itself was dropped (backlog full) or refused: nothing to update
            self.counters["unknown_item"] += 1
            log.warning("event log: %s", exc)
            return _SKIPPED
        except EventLogError as exc:
            if kind == "record" and "UNIQUE" in str(exc):
                # written already: the insert committed but its answer was lost (e.g. a retry after
                # a disk error on the commit's last step); the row is there
                self.counters["written"] += 1
                return True
            self._failed(str(exc))
            return False
        except ValueError as exc:  # a record that can never be stored (bad fields): report, skip
            log.error("event log refused a record: %s", exc)
            self.counters["records_dropped"] += 1
            return _SKIPPED
        self.counters["written"] += 1
        return True


PARK_S = 60.0      # how long an update may wait for its row
PARK_MAX = 10_000  # rows with parked updates
_SKIPPED = object()  # a job given up on purpose: done, but not a sign the log recovered
_REQUEUE = object()  # an update whose row is not written yet: queued again behind it


def open_event_log(state_dir: str | Path, storage) -> Recorder:
    """A Recorder over the EventLog in ``state_dir`` with the config's storage settings."""
    def opener():
        return EventLog(state_dir, storage.retention_days, storage.max_crops_mb, storage.save_crops)

    return Recorder(opener)
