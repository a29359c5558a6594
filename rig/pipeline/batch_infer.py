"""Stage: gather prepared items into batches and run them through the network.

A batch is dispatched as soon as an item's views are ready: the batcher takes
the first item waiting and every other item already waiting that fits in
``max_batch`` views; it waits for more (at most ``max_wait_ms``) only while an
item is being prepared and room is left — 0, the default, never waits. An item
alone is run on its own block (prepare.py wrote it in place: no copy); several
are copied into one batch buffer.

On a backend with ``submit``/``collect`` (TensorRT's double buffering), the
next batch is submitted before the previous one is collected, so the GPU runs
one batch while the host fills the next. Items whose views all have outputs go
to scoring, which runs in its own thread (``on_item`` queues them there).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from .clock import StageClock
from .items import Beat, ItemScorer, ItemState, Ledger, ViewJob

log = logging.getLogger(__name__)


class BatchInfer:
    def __init__(self, scorer: ItemScorer, views_q: queue.Queue, max_batch: int, max_wait_s: float,
                 more_coming: Callable[[], bool], ledger: Ledger, clock: StageClock, beat: Beat,
                 failsafe: Callable[[ItemState, str], None], on_item: Callable[[ItemState], None]):
        self.scorer = scorer
        self.views_q = views_q
        self.max_batch = max_batch
        self.max_wait = max_wait_s
        self.more_coming = more_coming  # an item is being prepared or waits to be
        self.ledger = ledger
        self.clock = clock
        self.beat = beat
        self.failsafe = failsafe
        self.on_item = on_item  # every view of the item has its outputs
        self._carry: ViewJob | None = None  # taken from the queue but did not fit the last batch
        backend = getattr(scorer, "backend", None)
        self.overlap = callable(getattr(backend, "submit", None)) and callable(getattr(backend, "collect", None))
        self.slots = int(getattr(backend, "SLOTS", 2)) if self.overlap else 1

    def _next(self, timeout: float) -> ViewJob | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return self.views_q.get(timeout=timeout) if timeout > 0 else self.views_q.get_nowait()
        except queue.Empty:
            return None

    def loop(self, stop: threading.Event) -> None:
        s = self.scorer
        buffers = [np.empty((self.max_batch, s.channels, s.input_size, s.input_size), np.float32)
                   for _ in range(self.slots)]
        inflight: deque = deque()  # submitted, not yet collected (double buffering)
        k = 0
        while not stop.is_set():
            self.beat("infer")
            first = self._next(0.0 if inflight else 0.2)
            if first is not None:
                jobs = self.gather(first)
                if self.overlap:
                    sub = self.submit(jobs, buffers[k % self.slots])
                    k += 1
                    if sub is not None:
                        inflight.append(sub)
                    if len(inflight) < self.slots:
                        continue  # fill the other slot before collecting this one
                else:
                    self.run(jobs, buffers[0])
                    continue
            if inflight:
                self.collect(*inflight.popleft())

    def gather(self, first: ViewJob) -> list[ViewJob]:
        jobs = [first]
        n = len(first.views)
        t_first = time.monotonic()
        while n < self.max_batch:
            job = self._next(0.0)
            if job is None:
                left = self.max_wait - (time.monotonic() - t_first)
                if left <= 0 or not self.more_coming():
                    break  # nothing else is ready: waiting would only add latency
                job = self._next(min(left, 0.2))
                if job is None:
                    break
            if n + len(job.views) > self.max_batch:
                self._carry = job  # opens the next batch
                break
            jobs.append(job)
            n += len(job.views)
        return jobs

    def _batch(self, jobs: list[ViewJob], buffer: np.ndarray) -> np.ndarray:
        t_run = time.monotonic()
        for j in jobs:
            self.clock.add("batch_wait", j.queued_at, t_run, j.item.no)
        if len(jobs) == 1 and len(jobs[0].views) <= self.max_batch:
            return jobs[0].tensor  # the item's own block, written in place by prepare
        n = 0
        for j in jobs:
            buffer[n:n + len(j.views)] = j.tensor
            n += len(j.views)
        return buffer[:n]

    def _failed(self, jobs: list[ViewJob]) -> None:
        log.exception("inference failed on a batch of %d items", len(jobs))
        self.ledger.count("stage_errors")
        for j in jobs:
            self.failsafe(j.item, "fault")

    def run(self, jobs: list[ViewJob], buffer: np.ndarray) -> None:
        batch = self._batch(jobs, buffer)
        t_run, c_run = time.monotonic(), time.thread_time()
        try:
            outs = self.scorer.run(batch)
        except Exception:  # noqa: BLE001 - a failed batch fails its items safe; the stage goes on
            self._failed(jobs)
            return
        self.clock.add("infer", t_run, time.monotonic(), cpu_s=time.thread_time() - c_run)
        self.hand_on(jobs, outs)

    def submit(self, jobs: list[ViewJob], buffer: np.ndarray):
        batch = self._batch(jobs, buffer)
        t_run, c_run = time.monotonic(), time.thread_time()
        try:
            idx = self.scorer.backend.submit(np.ascontiguousarray(batch, np.float32))
        except Exception:  # noqa: BLE001 - a failed batch fails its items safe; the stage goes on
            self._failed(jobs)
            return None
        return jobs, idx, t_run, time.thread_time() - c_run

    def collect(self, jobs: list[ViewJob], idx, t_run: float, cpu_s: float) -> None:
        c0 = time.thread_time()
        try:
            outs = self.scorer.backend.collect(idx)
        except Exception:  # noqa: BLE001 - a failed batch fails its items safe; the stage goes on
            self._failed(jobs)
            return
        self.clock.add("infer", t_run, time.monotonic(), cpu_s=cpu_s + time.thread_time() - c0)
        self.hand_on(jobs, outs)

    def hand_on(self, jobs: list[ViewJob], outs: dict) -> None:
        k = 0
        for j in jobs:
            for view in j.views:
                j.item.views[view] = {name: v[k] for name, v in outs.items()}
                k += 1
            if len(j.item.views) == j.item.expected and not j.item.decided:
                self.on_item(j.item)
