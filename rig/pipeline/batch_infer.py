"""Stage: gather prepared views into batches and run them through the network.

A batch closes at ``max_batch`` views, after ``max_wait_ms``, or as soon as
nothing else is on its way (waiting would only add latency). When every view of
an item has its outputs, the item goes to scoring.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from .clock import StageClock
from .items import Beat, ItemScorer, ItemState, Ledger, ViewJob, each

log = logging.getLogger(__name__)


class BatchInfer:
    def __init__(self, scorer: ItemScorer, views_q: queue.Queue, max_batch: int, max_wait_s: float,
                 more_coming: Callable[[], bool], ledger: Ledger, clock: StageClock, beat: Beat,
                 failsafe: Callable[[ItemState, str], None], on_item: Callable[[ItemState], None]):
        self.scorer = scorer
        self.views_q = views_q
        self.max_batch = max_batch
        self.max_wait = max_wait_s
        self.more_coming = more_coming  # views are being prepared or wait to be
        self.ledger = ledger
        self.clock = clock
        self.beat = beat
        self.failsafe = failsafe
        self.on_item = on_item  # every view of the item has its outputs

    def loop(self, stop: threading.Event) -> None:
        s = self.scorer
        batch = np.empty((self.max_batch, s.channels, s.input_size, s.input_size), np.float32)
        for first in each(self.views_q, stop, self.beat, "infer"):
            self.run(self.gather(first), batch)

    def gather(self, first: ViewJob) -> list[ViewJob]:
        jobs = [first]
        t_first = time.monotonic()
        while len(jobs) < self.max_batch:
            left = self.max_wait - (time.monotonic() - t_first)
            if left <= 0:
                break
            if self.views_q.empty() and not self.more_coming():
                break  # nothing else is on its way: waiting would only add latency
            try:
                jobs.append(self.views_q.get(timeout=left))
            except queue.Empty:
                break
        return jobs

    def run(self, jobs: list[ViewJob], batch: np.ndarray) -> None:
        t_run = time.monotonic()
        for j in jobs:
            self.clock.add("batch_wait", j.queued_at, t_run, j.item.no)
        for k, j in enumerate(jobs):
            batch[k] = j.tensor
        try:
            outs = self.scorer.run(batch[: len(jobs)])
        except Exception:
            log.exception("inference failed on a batch of %d", len(jobs))
            self.ledger.count("stage_errors")
            for j in jobs:
                self.failsafe(j.item, "fault")
            return
        self.clock.add("infer", t_run, time.monotonic())
        for k, j in enumerate(jobs):
            j.item.views[j.view] = {name: v[k] for name, v in outs.items()}
            if len(j.item.views) == j.item.expected and not j.item.decided:
                self.on_item(j.item)
