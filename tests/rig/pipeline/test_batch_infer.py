"""The batcher: an item's views go as one batch as soon as they are ready, an item alone runs on its own
block, and on a submit/collect backend (TensorRT's double buffering) the next batch is submitted
before the previous one is collected."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

import numpy as np
from damage_rig.rig.pipeline.batch_infer import BatchInfer
from damage_rig.rig.pipeline.clock import StageClock
from damage_rig.rig.pipeline.items import Ledger, ViewJob

C, S = 3, 4


class Backend:
    """Outputs each view's first value, so a view's result shows where its input went."""

    def __init__(self, slots: bool):
        self.calls: list[tuple] = []
        self.inputs: list[np.ndarray] = []
        self._held: dict[int, dict] = {}
        self._n = 0
        if slots:
            self.submit, self.collect = self._submit, self._collect

    def run(self, batch):
        self.calls.append(("run", len(batch)))
        self.inputs.append(batch)
        return {"v": batch[:, 0, 0, 0].copy()}

    def _submit(self, batch):
        self._n += 1
        self.calls.append(("submit", self._n))
        self._held[self._n] = {"v": batch[:, 0, 0, 0].copy()}
        return self._n

    def _collect(self, idx):
        self.calls.append(("collect", idx))
        return self._held.pop(idx)


def _job(no, values):
    t = np.zeros((len(values), C, S, S), np.float32)
    t[:, 0, 0, 0] = values
    item = SimpleNamespace(no=no, views={}, expected=len(values), decided=False)
    return ViewJob(item, [f"cam{k}" for k in range(len(values))], t, time.monotonic())


def _run(backend, jobs, max_batch=8):
    q: queue.Queue = queue.Queue()
    for j in jobs:
        q.put(j)
    done = []
    scorer = SimpleNamespace(channels=C, input_size=S, backend=backend, run=backend.run)
    b = BatchInfer(scorer, q, max_batch, 0.0, lambda: False, Ledger(), StageClock(), lambda s: None,
                   lambda it, why: done.append((it.no, why)), lambda it: done.append((it.no, "scored")))
    stop = threading.Event()
    t = threading.Thread(target=b.loop, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while len(done) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    return done


def test_items_already_waiting_share_a_batch_and_each_view_gets_its_own_output():
    backend = Backend(slots=False)
    jobs = [_job(1, [10.0, 11.0]), _job(2, [20.0, 21.0]), _job(3, [30.0, 31.0, 32.0])]
    done = _run(backend, jobs, max_batch=4)
    assert sorted(done) == [(1, "scored"), (2, "scored"), (3, "scored")]
    # 1 and 2 fit a batch of 4 together; 3 (3 views) opens the next
    assert backend.calls == [("run", 4), ("run", 3)]
    for j, want in zip(jobs, ([10, 11], [20, 21], [30, 31, 32])):
        assert [float(j.item.views[f"cam{k}"]["v"]) for k in range(len(want))] == want


def test_an_item_alone_runs_on_its_own_block():
    backend = Backend(slots=False)
    job = _job(1, [5.0, 6.0])
    _run(backend, [job])
    assert backend.inputs[0] is job.tensor  # no copy into a batch buffer


def test_the_next_batch_is_submitted_before_the_previous_is_collected():
    backend = Backend(slots=True)
    jobs = [_job(k, [float(k), float(k) + 0.5]) for k in range(1, 4)]
    done = _run(backend, jobs, max_batch=2)  # one item per batch
    assert sorted(done) == [(1, "scored"), (2, "scored"), (3, "scored")]
    calls = backend.calls
    assert calls.index(("submit", 2)) < calls.index(("collect", 1))
    assert [c for c in calls if c[0] == "collect"] == [("collect", 1), ("collect", 2), ("collect", 3)]
    for j in jobs:
        assert float(j.item.views["cam1"]["v"]) == j.item.no + 0.5
