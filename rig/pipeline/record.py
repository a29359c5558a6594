"""Stage: the event log's record of each decision and of each divert's outcome.

The decision stands whatever happens here: a record that cannot be stored is
logged and counted, never raised into the pipeline.
"""

from __future__ import annotations

import logging
import time

from ..detect.maps import evidence_map
from ..events import EventLog, ItemRecord
from ..foundation.errors import RigError
from .items import ItemState, Ledger
from .recorder import Recorder

log = logging.getLogger(__name__)


class Record:
    def __init__(self, events: EventLog | Recorder | None, save_crops: bool, model_version: str, ledger: Ledger):
        self.events = events
        self.save_crops = save_crops
        self.model_version = model_version
        self.ledger = ledger

    def decision(self, item: ItemState, latency_ms: float) -> None:
        if self.events is None:
            return
        s = item.score
        views = {}
        for v, crop in item.crops.items():
            hm = None
            if s is not None and v in s.views:
                # the fused evidence (head, patch anomaly, registered residuals) on the crop
                hm = evidence_map(s.views[v], crop.shape[:2])
            views[v] = {"rgb": crop, "heatmap": hm}
        rec = ItemRecord(
            id=item.item_id, captured_at=time.time() - (time.monotonic() - item.capture.host_time),
            belt_pos=int(item.fire_at), sku_pred=(s.sku_pred if s is not None else "") or "",
            sku_conf=float((s.sku_conf if s is not None else 0.0) or 0.0),
            score=float(s.score if s is not None else -1.0),
            type=(s.type if s is not None else "") or "", decision=item.decision, reason=item.reason,
            latency_ms=latency_ms, model_version=self.model_version,
            views=views if self.save_crops else {}, truth=item.truth)
        try:
            self.events.record(rec)
        except RigError as exc:  # the decision stands; the log says why it could not be stored
            log.error("item %s: event not recorded: %s", item.item_id, exc)
            self.ledger.count("stage_errors")
            self.ledger.count("event_write_failures")

    def result(self, item: ItemState, acked: bool, why: str) -> None:
        """A divert's outcome: acknowledged by the controller, or ``why`` not (late, fault)."""
        if self.events is None:
            return
        try:
            if acked:
                self.events.mark_acked(item.item_id, time.time())
            else:
                self.events.mark_result(item.item_id, False, why)
        except RigError as exc:
            log.error("item %s: divert result not recorded: %s", item.item_id, exc)
