"""Stage: the clock. Items not decided by their ``decide_by`` fail safe (late); diverts waiting
for a belt position are retried; decided items well past the gate are forgotten."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .dispatch import Dispatch
from .items import Beat, ItemState, Ledger

log = logging.getLogger(__name__)


class Deadlines:
    def __init__(self, ledger: Ledger, dispatch: Dispatch, failsafe: Callable[[ItemState, str], None],
                 beat: Beat):
        self.ledger = ledger
        self.dispatch = dispatch
        self.failsafe = failsafe
        self.beat = beat

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.beat("deadline")
            now = time.monotonic()
            for it in self.ledger.due(now):
                log.warning("item %s: no decision by its deadline; fail-safe", it.item_id)
                self.failsafe(it, "late")
            if self.ledger.unsent:
                self.dispatch.retry_unsent(now)
            self.ledger.forget_past(now)
            stop.wait(0.005)
