"""Stage: score an item from its views' network outputs and hand it to the decision.

Runs in its own thread (``loop``; ``inference.score_threads`` of them share the
queue), fed by the inference stage through a bounded queue (``submit``), so a
batch never waits for the previous items' scoring.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ..scan.decide import decide_with_scan
from .clock import StageClock
from .items import Beat, ItemScorer, ItemState, Ledger, Score, each

log = logging.getLogger(__name__)

SCORE_STAGES = ("identify", "anomaly", "fuse")


class ScoreStage:
    def __init__(self, scorer: ItemScorer, fpr_budget: float | None, ledger: Ledger, clock: StageClock,
                 failsafe: Callable[[ItemState, str], None],
                 decide: Callable[[ItemState, str, str, Score | None], None]):
        self.scorer = scorer
        self.fpr_budget = fpr_budget
        self.ledger = ledger
        self.clock = clock
        self.failsafe = failsafe
        self.decide = decide
        self._thr: float | None = None
        self.scan_cfg = None  # config.ScanConfig when the rig has a scan input: the scanned product is checked
        # the product's references not on the rig yet (reference store): "score" without the reference
        # channels, or "divert"; either way the reason is "no_references" (config gallery.on_miss)
        self.on_refs_missing = "score"
        self.queue: queue.Queue = queue.Queue(maxsize=64)
        self.beat: Beat = lambda stage: None
        self.busy = 0  # items being scored now (``inference.score_threads`` threads share the queue)
        self._busy_lock = threading.Lock()

    def submit(self, item: ItemState) -> None:
        """Queue ``item`` for the scoring thread (called by the inference stage); never blocks."""
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.ledger.count("overload")
            self.failsafe(item, "overload")

    def loop(self, stop: threading.Event) -> None:
        for item in each(self.queue, stop, self.beat, "score"):
            if item.decided:
                continue
            with self._busy_lock:
                self.busy += 1
            try:
                self(item)
            finally:
                with self._busy_lock:
                    self.busy -= 1

    def threshold(self) -> float | None:
        """The threshold for the configured FPR budget (None: the model card's)."""
        if self.fpr_budget is None:
            return None
        if self._thr is None:
            self._thr = self.scorer.threshold_for_fpr(self.fpr_budget)
        return self._thr

    def __call__(self, item: ItemState) -> None:
        t0, c0 = time.monotonic(), time.thread_time()
        try:
            if self.scan_cfg is not None:  # the scanned product, image identification as its cross-check
                decision, reason, score = decide_with_scan(self.scorer, item.views, item.scan, self.threshold(),
                                                           self.scan_cfg, item.item_id, canons=item.canons)
            else:
                score = self.scorer.score_item(item.views, threshold=self.threshold(), canons=item.canons)
                decision, reason = ("divert" if score.damaged else "pass"), "score"
            if getattr(score, "refs_missing", False) and reason != "wrong_item":
                reason = "no_references"
                if self.on_refs_missing == "divert":
                    decision = "divert"
        except Exception:
            log.exception("item %s: scoring failed", item.item_id)
            self.ledger.count("stage_errors")
            self.failsafe(item, "fault")
            return
        t1, cpu = time.monotonic(), time.thread_time() - c0
        timing = getattr(score, "timing_ms", None) or {}
        if timing:
            # the thread's CPU time shared out over the three steps in proportion to their wall time
            wall = sum(timing.get(st, 0.0) for st in SCORE_STAGES) or 1.0
            t = t0
            for stage in SCORE_STAGES:
                if stage in timing:
                    self.clock.add(stage, t, t + timing[stage] / 1000.0, item.no,
                                   cpu_s=cpu * timing[stage] / wall)
                    t += timing[stage] / 1000.0
        else:
            self.clock.add("score", t0, t1, item.no, cpu_s=cpu)
        self.decide(item, decision, reason, score)
