"""The rig's health as a monitor acts on it: healthy (exit 0), degraded (1), down (2).

``DecisionStats`` is a decision sink of the running service: counts by outcome
and reason and the latencies of the last minute, for the status file.
``assess(info)`` turns what `rig status` gathered (status file, event log,
drift flags) into a state and the list of problems behind it:

* down: no status file (never ran here), the service stopped, or the status
  file older than ``STALE_AFTER_S`` (3 s; the service writes it every second):
  killed, hung or stopped without saying so.
* degraded: starting or stopping, a camera disconnected, the controller link
  down, a stage stuck, event-log or status writes failing, the MQTT broker
  unreachable (events wait in the outbox), packaging drift flagged.
* healthy: none of those.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from ..pipeline.clock import percentiles
from .status import STALE_AFTER_S, degraded

HEALTHY, DEGRADED, DOWN = "healthy", "degraded", "down"
EXIT_CODES = {HEALTHY: 0, DEGRADED: 1, DOWN: 2}
WINDOW_S = 60.0
SCORED = ("score", "wrong_item", "no_scan", "unreadable_scan", "unknown_sku", "no_references")


class DecisionStats:
    """Decision sink: counts by decision and reason, latencies of the last ``window_s``."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.by_reason: Counter = Counter()
        self.by_decision: Counter = Counter()
        self.divert_results: Counter = Counter()
        self._lat: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def decision(self, item, latency_ms: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.by_reason[item.reason] += 1
            self.by_decision[item.decision] += 1
            self._lat.append((now, latency_ms))
            while self._lat and self._lat[0][0] < now - self.window_s:
                self._lat.popleft()

    def divert_result(self, item, res) -> None:
        with self._lock:
            self.divert_results["acked" if res.acked else "late" if res.late else "fault"] += 1

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            lat = [ms for t, ms in self._lat if t >= now - self.window_s]
            reasons = dict(self.by_reason)
            results = dict(self.divert_results)
        p = percentiles(lat)
        return {"by_reason": reasons, "divert_results": results,
                "failsafe_reasons": {r: n for r, n in reasons.items() if r not in SCORED},
                "latency_ms": {"p50": p["p50_ms"], "p99": p["p99_ms"], "max": p["max_ms"], "n": p["n"],
                               "window_s": self.window_s}}


def assess(info: dict) -> dict:
    """{"state": healthy|degraded|down, "problems": [...]} from `report.gather`'s dict."""
    st = info.get("status")
    problems: list[str] = []
    if st is None:
        why = "not running: no status file (the rig never ran with this state directory)"
        return {"state": DOWN, "problems": [why]}
    state = st.get("state", "?")
    if state == "stopped":
        if st.get("demo"):
            return {"state": DOWN, "problems": ["not running: the last `rig demo` finished (its figures follow)"]}
        return {"state": DOWN, "problems": ["not running: the service stopped"]}
    if st["age_s"] > STALE_AFTER_S:
        why = f"not running: status last written {st['age_s']:.0f} s ago (state {state!r}): stopped, killed or hung"
        return {"state": DOWN, "problems": [why]}
    if state != "running":
        problems.append(f"service {state}")
    for name, cam in sorted((st.get("cameras") or {}).items()):
        if not cam.get("connected", True):
            problems.append(f"camera {name} disconnected")
    ctl = st.get("controller") or {}
    if ctl.get("link") != "up":
        problems.append(f"controller link {ctl.get('link', '?')}: {ctl.get('last_error') or 'no heartbeat'}")
    if st.get("stuck"):
        problems.append(f"stuck stages: {', '.join(st['stuck'])}")
    for what in degraded(st):  # the event log not writable, records dropped (status.py)
        problems.append(f"writes failing: {what}")
    mq = st.get("mqtt")
    if mq is not None and not mq.get("connected"):
        problems.append(f"MQTT broker unreachable ({mq.get('outbox_depth', 0)} events waiting in the outbox)")
    if info.get("event_log_error"):
        problems.append(f"event log unreadable: {info['event_log_error']}")
    for f in info.get("drift") or []:
        problems.append(f"packaging drift: sku {f['sku']}")
    return {"state": DEGRADED if problems else HEALTHY, "problems": problems}


def summary(info: dict) -> dict:
    """The health check's figures: state, counts, fail-safe reasons, latency, link (the `--json` object)."""
    h = assess(info)
    st = info.get("status") or {}
    c = st.get("counters") if st else None
    dec = st.get("decisions") or {}
    out = {"state": h["state"], "problems": h["problems"], "exit_code": EXIT_CODES[h["state"]]}
    if c is not None:
        out.update(counts_from="service (since its start)", items=c.get("items", 0),
                   decisions=c.get("decisions", 0), diverted=c.get("diverted", 0), late=c.get("late", 0),
                   failsafe=c.get("failsafe", 0), failsafe_reasons=dec.get("failsafe_reasons", {}),
                   by_reason=dec.get("by_reason", {}),
                   latency_ms=dec.get("latency_ms") or {"p50": None, "p99": None, "n": 0, "window_s": WINDOW_S})
    else:
        ev = info.get("counts") or {"items": 0, "divert": 0, "by_reason": {}}
        reasons = ev.get("by_reason", {})
        fs = {r: n for r, n in reasons.items() if r not in SCORED and r != "late"}
        out.update(counts_from="event log (all time)" if info.get("counts") else "none",
                   items=ev["items"], decisions=ev["items"], diverted=ev["divert"], late=reasons.get("late", 0),
                   failsafe=sum(fs.values()), failsafe_reasons=fs, by_reason=reasons,
                   latency_ms={"p50": None, "p99": None, "n": 0, "window_s": WINDOW_S})
    ctl = st.get("controller") or {}
    out["link"] = {"state": ctl.get("link"), "port": ctl.get("port"), "heartbeat_age_s": ctl.get("last_heartbeat_s")}
    out["service"] = {"state": st.get("state"), "pid": st.get("pid"), "age_s": st.get("age_s")}
    out["mqtt"] = st.get("mqtt")
    out["scan"] = st.get("scan")
    out["state_dir_free_bytes"] = st.get("state_dir_free_bytes")
    return out
