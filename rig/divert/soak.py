"""Soak the divert link against the emulator with injected faults and count every outcome.

``rig divert soak`` prints what this returns: the numbers behind the issue's
target "with 5 % corrupted and 1 % dropped frames every divert is acknowledged
or reported late / fault — none silently lost".
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from .base import DivertResult, open_link
from .spawn import spawn_emulator


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def soak(*, items: int = 1000, corrupt: float = 0.05, drop: float = 0.01, speed_mps: float = 1.0,
         ahead_m: float = 0.15, interval_s: float = 0.005, ack_timeout_ms: float = 40.0,
         retries: int = 3, seed: int | None = 1) -> dict:
    """Send ``items`` diverts, each ``ahead_m`` before the gate; return outcome counts."""
    cpm = 1000.0
    results: list[DivertResult] = []
    lock = threading.Lock()

    def collect(res: DivertResult) -> None:
        with lock:
            results.append(res)

    with tempfile.TemporaryDirectory(prefix="rig-soak-") as tmp:
        em = spawn_emulator(speed_mps=speed_mps, counts_per_m=cpm, heartbeat_ms=50,
                            faults={"corrupt": corrupt, "drop": drop, "seed": seed},
                            log_path=Path(tmp) / "gate.jsonl")
        try:
            link = open_link(em.port, ack_timeout_ms=ack_timeout_ms, retries=retries,
                             heartbeat_period_ms=50, counts_per_m=cpm)
            try:
                if not link.wait_ready(5.0):
                    raise TimeoutError(f"no heartbeat from the emulator on {em.port}")
                time.sleep(0.3)
                t_start = time.monotonic()
                for item in range(items):
                    t = time.monotonic()
                    link.divert(item, 1, link.position_at(t) + int(ahead_m * cpm),
                                deadline=t + ahead_m / speed_mps, on_result=collect)
                    time.sleep(interval_s)
                end = time.monotonic() + 5 + ahead_m / speed_mps
                while len(results) < items and time.monotonic() < end:
                    time.sleep(0.01)
                time.sleep(ahead_m / speed_mps + 0.1)  # let the last gates fire
                elapsed = time.monotonic() - t_start
                counters = dict(link.counters)
            finally:
                link.close()
            log = em.gate_log()
        finally:
            em.stop()
    fired = [e for e in log if e["event"] == "fired"]
    fired_ids = [e["item_id"] for e in fired]
    reported = [r.item_id for r in results]
    ack_ms = [(r.done_at - r.sent_at) * 1000 for r in results if r.acked]
    outcomes = [r.outcome for r in results]
    return {
        "items": items, "corrupt": corrupt, "drop": drop,
        "results": len(results), "unreported": items - len(set(reported)),
        "reported_twice": len(reported) - len(set(reported)),
        "acked": outcomes.count("acked"), "late": outcomes.count("late"),
        "fault": outcomes.count("fault"),
        "fired": len(fired), "fired_twice": len(fired_ids) - len(set(fired_ids)),
        "acked_not_fired": len({r.item_id for r in results if r.acked} - set(fired_ids)),
        "max_fire_error_counts": max((e["fired_at"] - e["fire_at"] for e in fired), default=None),
        "ack_ms": {"p50": _percentile(ack_ms, 50), "p99": _percentile(ack_ms, 99),
                   "max": max(ack_ms, default=None)},
        "link_counters": counters, "elapsed_s": round(elapsed, 2),
    }
