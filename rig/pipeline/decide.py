"""Stage: the decision. Each item is decided exactly once: from its score, or by the fail-safe.

After the decision the item is recorded (record.py) and, when diverted,
handed to the divert link (dispatch.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .dispatch import Dispatch
from .items import SCORED_REASONS, ItemState, Ledger, Score
from .observe import Sinks


class Decide:
    def __init__(self, fail_safe: str, ledger: Ledger, record: Callable[[ItemState, float], None],
                 dispatch: Dispatch, sinks: Sinks | None = None):
        self.fail_safe_decision = "divert" if fail_safe == "divert" else "pass"
        self.sinks = sinks if sinks is not None else Sinks()
        self.ledger = ledger
        self.record = record
        self.dispatch = dispatch

    def failsafe(self, item: ItemState, reason: str) -> None:
        self(item, self.fail_safe_decision, reason, None)

    def failsafe_all(self, reason: str) -> None:
        for it in self.ledger.undecided():
            self.failsafe(it, reason)

    def __call__(self, item: ItemState, decision: str, reason: str, score: Score | None) -> None:
        if not self.ledger.claim(item):
            if reason == "score":
                self.ledger.count("ignored_late_scores")
            return
        now = time.monotonic()
        item.decision, item.reason, item.score, item.decided_at = decision, reason, score, now
        lat = (now - item.capture.host_time) * 1000.0
        led = self.ledger
        with led.lock:
            led.counters["decisions"] += 1
            if reason == "late":
                led.counters["late"] += 1
            elif reason not in SCORED_REASONS:
                led.counters["failsafe"] += 1
            if decision == "divert":
                led.counters["diverted"] += 1
            led.latencies_ms.append(lat)
            led.last_decision_at = now
        if decision == "divert":
            item.fire_at = self.dispatch.fire_at(item) or -1
            self.dispatch.send_or_wait(item)
        # decide first, record after: the DIVERT is on the wire; the row only joins the recorder's
        # queue (recorder.py), so a slow, locked or full disk never delays a decision
        self.record(item, lat)
        item.views, item.crops, item.canons = {}, {}, {}  # network outputs and crops are with the recorder now
        self.sinks.decision(item, lat)  # after the divert frame: observers never delay it
