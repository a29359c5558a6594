"""Stage: send each divert to the gate controller, stamped with the item's belt position.

The position comes from the controller's clock model; while the link has none
(cut, restarting) the divert waits and is retried until the item reaches the
gate. Results (acked, late, fault) come back on the link's thread.
"""

from __future__ import annotations

import logging
import time

from ..divert.base import DivertLink, DivertResult
from ..foundation.errors import RigError
from .clock import StageClock
from .items import ItemState, Ledger
from .record import Record

log = logging.getLogger(__name__)


class Dispatch:
    def __init__(self, link: DivertLink, gate_id: int, counts_per_m: float, ledger: Ledger,
                 clock: StageClock, record: Record):
        self.link = link
        self.gate_id = gate_id
        self.cpm = counts_per_m
        self.ledger = ledger
        self.clock = clock
        self.record = record

    def fire_at(self, item: ItemState) -> int | None:
        """The belt position (counts) at which the item reaches the gate, from the
        controller's clock model; None while the link has no position (cut, restarting)."""
        try:
            pos = self.link.position_at(item.capture.host_time)
        except RigError:
            return None
        return pos + int(round(item.dist_m * self.cpm))

    def send_or_wait(self, item: ItemState) -> None:
        if item.fire_at < 0:
            # no belt position (the link is down): keep trying until the item reaches the gate
            log.warning("item %s: divert waits for the controller's belt position", item.item_id)
            self.ledger.add_unsent([item])
        else:
            self.send(item)

    def send(self, item: ItemState) -> None:
        t_send = time.monotonic()
        self.link.divert(item.no, self.gate_id, item.fire_at, item.deadline, self.on_result)
        self.clock.add("divert_send", t_send, time.monotonic(), item.no)

    def retry_unsent(self, now: float) -> None:
        keep = []
        for item in self.ledger.take_unsent():
            if now >= item.deadline:
                log.error("item %s: the link never gave a belt position before the gate; late", item.item_id)
                self.ledger.count("late")
                self.record.result(item, acked=False, why="late")
                continue
            fire_at = self.fire_at(item)
            if fire_at is None:
                keep.append(item)
                continue
            item.fire_at = fire_at
            self.send(item)
        if keep:
            self.ledger.add_unsent(keep)

    def on_result(self, res: DivertResult) -> None:
        item = self.ledger.get(res.item_id)
        if item is None:
            log.warning("divert result for unknown item %s", res.item_id)
            return
        item.result = res
        self.clock.add("ack", res.sent_at, res.done_at, item.no)
        self.ledger.count("divert_acked" if res.acked else "late" if res.late else "faults")
        self.record.result(item, acked=res.acked, why="late" if res.late else "fault")
