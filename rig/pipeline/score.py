"""Stage: score an item from its views' network outputs and hand it to the decision."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..scan.decide import decide_with_scan
from .clock import StageClock
from .items import ItemScorer, ItemState, Ledger, Score

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

    def threshold(self) -> float | None:
        """The threshold for the configured FPR budget (None: the model card's)."""
        if self.fpr_budget is None:
            return None
        if self._thr is None:
            self._thr = self.scorer.threshold_for_fpr(self.fpr_budget)
        return self._thr

    def __call__(self, item: ItemState) -> None:
        t0 = time.monotonic()
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
        t1 = time.monotonic()
        timing = getattr(score, "timing_ms", None) or {}
        if timing:
            t = t0
            for stage in SCORE_STAGES:
                if stage in timing:
                    self.clock.add(stage, t, t + timing[stage] / 1000.0, item.no)
                    t += timing[stage] / 1000.0
        else:
            self.clock.add("score", t0, t1, item.no)
        self.decide(item, decision, reason, score)
