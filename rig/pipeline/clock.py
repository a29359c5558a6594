"""Per-stage latency records shared by the pipeline, `rig demo` and `rig bench`.

Every stage of an item's journey records how long it took (monotonic clock,
milliseconds) and, for the trace export, when it started and on which thread.
Work stages also record the CPU time their thread spent on it
(``time.thread_time``, not wall time): what the stage costs the machine, apart
from the time it waited for a core.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

STAGES = ("capture", "sync", "trigger", "preprocess", "batch_wait", "infer", "identify", "anomaly", "fuse",
          "divert_send", "ack")


@dataclass
class Span:
    stage: str
    start: float  # monotonic seconds
    end: float
    thread: str
    item: int | None = None
    cpu_s: float | None = None  # the thread's CPU time spent in the span (work stages only)


def percentiles(values) -> dict:
    """p50/p95/p99/max (ms) of a sequence of milliseconds; zeros for an empty one."""
    a = np.asarray(list(values), float)
    if a.size == 0:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "n": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99], method="linear")
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3),
            "max_ms": round(float(a.max()), 3), "n": int(a.size)}


class StageClock:
    """Thread-safe collector of stage durations and spans."""

    def __init__(self, keep_spans: bool = False, max_spans: int = 200_000, window: int | None = None):
        """``window``: keep only the last N durations per stage (a service running for months);
        None keeps every one (a bench or demo run, summarised at its end)."""
        self._lock = threading.Lock()
        self.window = window
        self.durations: dict[str, list[float] | collections.deque] = {}
        self.cpu_ms: dict[str, list[float] | collections.deque] = {}  # stage -> thread CPU ms per record
        self.counts: dict[str, int] = {}  # stage -> records since the start (not windowed)
        self.cpu_total_ms: dict[str, float] = {}  # stage -> thread CPU ms since the start (not windowed)
        self.spans: list[Span] = []
        self.keep_spans = keep_spans
        self.max_spans = max_spans
        # called with (stage, seconds) for every duration (the service's latency histograms); must be cheap
        self.observers: list = []

    def _series(self, table: dict, stage: str):
        d = table.get(stage)
        if d is None:
            d = table[stage] = [] if self.window is None else collections.deque(maxlen=self.window)
        return d

    def add(self, stage: str, start: float, end: float, item: int | None = None,
            cpu_s: float | None = None) -> None:
        with self._lock:
            self._series(self.durations, stage).append((end - start) * 1000.0)
            self.counts[stage] = self.counts.get(stage, 0) + 1
            if cpu_s is not None:
                self._series(self.cpu_ms, stage).append(cpu_s * 1000.0)
                self.cpu_total_ms[stage] = self.cpu_total_ms.get(stage, 0.0) + cpu_s * 1000.0
            if self.keep_spans and len(self.spans) < self.max_spans:
                self.spans.append(Span(stage, start, end, threading.current_thread().name, item, cpu_s))
        for fn in self.observers:
            fn(stage, end - start)

    def time(self, stage: str, item: int | None = None):
        return _Timer(self, stage, item)

    def summary(self) -> dict:
        with self._lock:
            return {k: percentiles(v) for k, v in self.durations.items()}


class _Timer:
    def __init__(self, clock: StageClock, stage: str, item):
        self.clock, self.stage, self.item = clock, stage, item

    def __enter__(self):
        self.t0, self.c0 = time.monotonic(), time.thread_time()
        return self

    def __exit__(self, *exc):
        self.clock.add(self.stage, self.t0, time.monotonic(), self.item, cpu_s=time.thread_time() - self.c0)
