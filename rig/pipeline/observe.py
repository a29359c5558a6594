"""Decision observers: what the service hangs on the pipeline (metrics, MQTT, health figures).

Each sink has ``decision(item, latency_ms)`` and ``divert_result(item, result)``;
both are called after the divert frame went out and must return at once (a
sink only counts or queues: its I/O runs on its own thread). A sink that
raises is logged, never allowed to break the decision path.
"""

from __future__ import annotations

import logging

from .items import ItemState

log = logging.getLogger(__name__)


class Sinks(list):
    def decision(self, item: ItemState, latency_ms: float) -> None:
        self._tell("decision", item, latency_ms)

    def divert_result(self, item: ItemState, result) -> None:
        self._tell("divert_result", item, result)

    def _tell(self, what: str, item: ItemState, arg) -> None:
        for sink in self:
            try:
                getattr(sink, what)(item, arg)
            except Exception:  # an observer's bug must not stop decisions
                log.exception("decision sink %s failed on item %s", type(sink).__name__, item.item_id)
