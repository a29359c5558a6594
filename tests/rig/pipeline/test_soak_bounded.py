"""Issue 13 defect 8: unbounded growth. 100,000 items through the decision path (admit -> prepare ->
fail-safe decision -> DIVERT -> result -> recorder queue), no rendering: RSS stays flat and every
statistic is a rolling window."""

from __future__ import annotations

import os
import time

import pytest
from damage_rig.calibration.model import load_calibration
from damage_rig.rig.config import DEMO_CONFIG, load_config
from damage_rig.rig.divert.link import DivertResult
from damage_rig.rig.pipeline.items import LATENCY_WINDOW
from damage_rig.rig.pipeline.recorder import Recorder
from damage_rig.rig.pipeline.rig import Rig
from damage_rig.rig.trigger import Blob, Capture

pytestmark = pytest.mark.slow

ITEMS = 100_000
RATE = 4_000


class InstantLink:
    """A controller that ACKs every DIVERT at once (no serial port)."""

    healthy = True

    def __init__(self):
        self.counters: dict = {}

    def position_at(self, t):
        return int(t * 1000)

    def divert(self, item_id, gate_id, fire_at, deadline, on_result):
        now = time.monotonic()
        on_result(DivertResult(item_id, True, False, None, 1, now, now, gate_id, fire_at))


class NullLog:
    """An event log that stores nothing (the soak measures the runtime, not SQLite)."""

    def __init__(self):
        self.rows = 0

    def record(self, rec):
        self.rows += 1

    def mark_acked(self, *a):
        pass

    def mark_result(self, *a):
        pass

    def close(self):
        pass


class Scorer:
    channels, input_size, version = 4, 32, "soak"


class Pre:
    name = "opencv"


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_100k_items_keep_rss_flat_and_windows_bounded():
    cfg = load_config(DEMO_CONFIG)
    calib = load_calibration(cfg.calibration_path)
    null = NullLog()
    rec = Recorder(lambda: null)
    rig = Rig(cfg, calib, [], Scorer(), Pre(), InstantLink(), events=rec)
    rig.start()
    blob = Blob(0.0, 0.0, -0.1, 0.1, -0.1, 0.1, 0.05, 1000, False)
    marks = {}
    t0 = time.monotonic()
    try:
        for i in range(ITEMS):
            now = time.monotonic()
            # captured 3.05 s ago (the gate is 3 s away): decided at once, forgotten 5 s after its gate
            rig.admission(Capture(i, {}, blob, now - 3.05, 0.0, now))
            if i % 200 == 199:
                while rig.capture_q.qsize() > 8 or rec.backlog > 1000:
                    time.sleep(0.001)
                pace = t0 + (i + 1) / RATE - time.monotonic()  # RATE items/s: 5 s of them held at once
                if pace > 0:
                    time.sleep(pace)
            if i + 1 in (20_000, ITEMS):
                assert rig.idle() or _settle(rig)
                marks[i + 1] = rss_mb()
    finally:
        rig.stop(timeout=5)
        rec.close()
    took = time.monotonic() - t0
    c = rig.counters
    grow = marks[ITEMS] - marks[20_000]
    print(f"{ITEMS} items in {took:.1f} s: RSS {marks[20_000]:.1f} MB at 20k -> {marks[ITEMS]:.1f} MB at 100k "
          f"(+{grow:.1f} MB); decisions {c['decisions']}, acked {c['divert_acked']}, rows {null.rows}; "
          f"items held {len(rig.items)}, latency samples {len(rig.ledger.latencies_ms)}, "
          f"stage samples {max(len(v) for v in rig.clock.durations.values())}")
    assert c["decisions"] == ITEMS and c["divert_acked"] == ITEMS and null.rows == ITEMS
    assert len(rig.ledger.latencies_ms) <= LATENCY_WINDOW
    assert all(len(v) <= LATENCY_WINDOW for v in rig.clock.durations.values())
    assert len(rig.items) < 6 * RATE
    assert grow < 16.0


def _settle(rig, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not rig.idle():
        time.sleep(0.01)
    time.sleep(0.05)
    return True
