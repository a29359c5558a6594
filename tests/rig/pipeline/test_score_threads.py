"""Scoring in threads of its own: the inference stage hands items over without waiting, and with
several score threads every item is still decided exactly once."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from damage_rig.rig.pipeline.clock import StageClock
from damage_rig.rig.pipeline.items import Ledger
from damage_rig.rig.pipeline.score import ScoreStage


class SlowScorer:
    """Each score holds its thread until released: the hand-over must not wait for it."""

    def __init__(self):
        self.go = threading.Event()
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()

    def threshold_for_fpr(self, fpr):
        return 0.5

    def score_item(self, views, threshold=None, canons=None):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        self.go.wait(10)
        with self.lock:
            self.active -= 1
        return SimpleNamespace(score=0.1, damaged=False, timing_ms={"identify": 1.0, "anomaly": 2.0, "fuse": 0.1})


def test_items_handed_to_scoring_at_once_and_each_decided_once_by_two_threads():
    scorer = SlowScorer()
    decided = []
    ledger = Ledger(keep_items=True)
    stage = ScoreStage(scorer, None, ledger, StageClock(), lambda it, why: decided.append((it.no, why)),
                       lambda it, decision, reason, score: decided.append((it.no, reason)))
    stop = threading.Event()
    threads = [threading.Thread(target=stage.loop, args=(stop,), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    items = [SimpleNamespace(no=k, views={}, canons={}, scan=None, item_id=str(k), decided=False) for k in range(20)]
    for it in items:
        stage.submit(it)  # the inference thread's call: returns while scoring is still blocked
    deadline = time.monotonic() + 10
    while scorer.active < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scorer.active == 2 and not decided  # both threads busy, nothing decided yet
    scorer.go.set()
    while len(decided) < len(items) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    assert sorted(no for no, _ in decided) == list(range(20))
    assert {why for _, why in decided} == {"score"}
    assert scorer.most == 2
