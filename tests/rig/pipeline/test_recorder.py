"""The recorder (rig/pipeline/recorder.py): the decision path only enqueues; a failing event log
delays rows, retries them in order, and the queue's bounds are counted, never silent."""

from __future__ import annotations

import threading
import time

from damage_rig.rig.events import EventLog, EventLogError, UnknownItemError
from damage_rig.rig.pipeline.recorder import Recorder

from tests.helpers.events import make_record


class FlakyLog:
    """Refuses every write while ``broken`` is set (a locked or full disk), then stores in order."""

    def __init__(self):
        self.broken = threading.Event()
        self.rows: dict[str, dict] = {}
        self.calls = 0

    def record(self, rec):
        self.calls += 1
        if self.broken.is_set():
            raise EventLogError("database is locked")
        self.rows[rec.id] = {"acked": False, "crops": bool(rec.views)}

    def mark_acked(self, item_id, at):
        if self.broken.is_set():
            raise EventLogError("database is locked")
        if item_id not in self.rows:
            raise UnknownItemError(item_id)
        self.rows[item_id]["acked"] = True

    def mark_result(self, item_id, acked, reason):
        self.mark_acked(item_id, 0) if acked else None

    def close(self):
        pass


def test_enqueue_never_blocks_and_rows_follow_when_the_log_recovers():
    log = FlakyLog()
    log.broken.set()
    rec = Recorder(lambda: log, retry_min_s=0.01, retry_max_s=0.05)
    t0 = time.monotonic()
    for i in range(200):
        rec.record(make_record(i))
        rec.mark_acked(f"it{i:06d}", time.time())
    assert time.monotonic() - t0 < 0.5  # 400 jobs queued while every write fails
    time.sleep(0.2)
    st = rec.stats()
    assert st["error"] and st["backlog"] == 400 and st["retries"] >= 1
    log.broken.clear()
    assert rec.flush(10)
    assert len(log.rows) == 200 and all(r["acked"] for r in log.rows.values())
    assert rec.stats()["error"] is None and rec.stats()["records_dropped"] == 0
    rec.close()


def test_bounds_are_counted():
    log = FlakyLog()
    log.broken.set()
    rec = Recorder(lambda: log, max_jobs=10, crop_budget_bytes=3 * 48 * 48 * 3 * 2, retry_min_s=0.01)
    for i in range(15):
        rec.record(make_record(i))  # 2 views of 48x48 each
    rec.mark_acked("it000000", time.time())  # an acknowledgement is queued even past the bound
    st = rec.stats()
    assert st["records_dropped"] == 5 and st["crops_skipped"] >= 1 and st["backlog"] == 11
    log.broken.clear()
    assert rec.flush(10)
    assert len(log.rows) == 10 and log.rows["it000000"]["acked"]
    assert sum(r["crops"] for r in log.rows.values()) == 3
    rec.close()


def test_an_ack_that_overtakes_its_row_is_applied_after_it(tmp_path):
    """The DIVERT goes out before the row is queued: its ACK may be queued first."""
    rec = Recorder(lambda: EventLog(tmp_path))
    rec.mark_acked("it000001", time.time())
    rec.record(make_record(1))
    assert rec.flush(10)
    rec.close()
    with EventLog(tmp_path) as log:
        assert log.get("it000001")["acked"]


def test_event_log_that_cannot_open_is_retried_in_the_background(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    rec = Recorder(lambda: EventLog(blocker), retry_min_s=0.01, retry_max_s=0.05)
    rec.record(make_record(1))
    time.sleep(0.2)
    assert rec.stats()["open_failures"] >= 1 and not rec.stats()["open"] and rec.backlog == 1
    blocker.unlink()
    assert rec.flush(10)
    rec.close()
    with EventLog(blocker) as log:
        assert log.get("it000001")["decision"] == "divert"


def test_an_ack_that_arrives_before_its_row_is_queued_is_applied_once_the_row_is_written():
    """The DIVERT goes out before the decision's record is built (decide.py): a fast controller's
    ACK can reach the recorder before the row is even queued. It waits for that row."""
    log = FlakyLog()
    rec = Recorder(lambda: log, retry_min_s=0.01, retry_max_s=0.05)
    try:
        rec.mark_acked("it000007", time.time())
        time.sleep(0.3)  # far longer than the in-queue retries (about 12 ms)
        assert "it000007" not in log.rows
        rec.record(make_record(7))
        assert rec.flush(5.0)
        deadline = time.monotonic() + 5.0
        while not log.rows.get("it000007", {}).get("acked") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.rows["it000007"]["acked"]
        assert rec.counters["unknown_item"] == 0
    finally:
        rec.close()
