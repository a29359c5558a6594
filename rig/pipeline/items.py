"""What flows between the stages, what they need of their collaborators, and the shared ledger.

``ItemState`` is one triggered item from capture to its divert result;
``ViewJob`` an item's prepared views on their way to the network. The Protocols say what
the stages use of the scorer and the preprocessor (the divert link's is
:class:`damage_rig.rig.divert.base.DivertLink`). :class:`Ledger` holds every item
in flight, the deadline heap and the counters, behind one lock.
"""

from __future__ import annotations

import collections
import heapq
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..trigger import Capture

#: a service keeps the last N latency samples per statistic (rolling window), not every one
LATENCY_WINDOW = 10_000

COUNTERS = ("items", "decisions", "diverted", "divert_acked", "late", "faults", "failsafe", "overload",
            "stage_errors", "ignored_late_scores", "event_write_failures")

#: reasons of decisions taken on the item's score (rig/scan/decide.py adds the scan's); any other is the fail-safe's
# "no_references": the product's references were still being fetched from the reference store
SCORED_REASONS = frozenset({"score", "wrong_item", "no_scan", "unreadable_scan", "unknown_sku",
                            "no_references"})


class Score(Protocol):
    """An item's score as the decision and the event log read it (rig/detect/scoring.py ItemScore)."""

    score: float
    damaged: bool
    type: str
    sku_pred: str
    sku_conf: float
    views: dict
    timing_ms: dict


class ItemScorer(Protocol):
    """What the pipeline needs of a scorer (rig/detect/scoring.py Scorer)."""

    input_size: int
    channels: int
    version: str

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def depth_channel(self, depth_mm: np.ndarray | None) -> np.ndarray | None: ...

    def canon_view(self, view: str, rgb: np.ndarray, depth_mm: np.ndarray | None) -> object | None: ...

    def score_item(self, view_outputs: dict, threshold: float | None = None,
                   canons: dict | None = None) -> Score: ...

    def threshold_for_fpr(self, fpr: float) -> float: ...


@dataclass
class ItemState:
    no: int
    item_id: str
    capture: Capture
    fire_at: int
    deadline: float  # the item reaches the gate (monotonic)
    decide_by: float  # after this the fail-safe decides
    dist_m: float = 0.0  # from where it was captured to the gate
    views: dict = field(default_factory=dict)  # view -> network outputs
    crops: dict = field(default_factory=dict)  # view -> RGB crop
    canons: dict = field(default_factory=dict)  # view -> the crop in canonical pose (registration)
    expected: int = 0
    decided: bool = False
    decision: str = ""
    reason: str = ""
    score: Score | None = None
    decided_at: float = 0.0
    truth: dict | None = None
    result: object = None  # the divert link's DivertResult
    scan: object = None  # the upstream scan joined to this item (rig/scan), when the rig has a scan input


@dataclass
class ViewJob:
    """Every prepared view of one item: ``tensor`` is (len(views), C, S, S), written in one
    fused preprocessing call; when the item makes a batch alone it is the batch itself."""

    item: ItemState
    views: list[str]
    tensor: np.ndarray
    queued_at: float


class Ledger:
    """Every item in flight, the deadline heap, the diverts waiting for a belt position and the
    counters, behind one lock (``lock``; held only for bookkeeping, never across I/O)."""

    def __init__(self, keep_items: bool = False):
        self.lock = threading.Lock()
        self.items: dict[int, ItemState] = {}
        self.deadlines: list[tuple[float, int]] = []
        self.unsent: list[ItemState] = []  # diverts waiting for the link's belt position
        self.counters = dict.fromkeys(COUNTERS, 0)
        # a service keeps a rolling window (months of items); demo and bench keep every sample
        self.latencies_ms: list[float] | collections.deque = (
            [] if keep_items else collections.deque(maxlen=LATENCY_WINDOW))
        self.first_capture_at: float | None = None
        self.last_decision_at: float | None = None
        # a service forgets items once they are past the gate; demo and bench keep them for summaries
        self.keep_items = keep_items

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.counters)

    def admit(self, item: ItemState) -> None:
        with self.lock:
            self.items[item.no] = item
            heapq.heappush(self.deadlines, (item.decide_by, item.no))
            self.counters["items"] += 1
            if self.first_capture_at is None:
                self.first_capture_at = item.capture.host_time

    def get(self, no: int) -> ItemState | None:
        with self.lock:
            return self.items.get(no)

    def all_items(self) -> list[ItemState]:
        with self.lock:
            return list(self.items.values())

    def undecided(self) -> list[ItemState]:
        with self.lock:
            return [it for it in self.items.values() if not it.decided]

    def claim(self, item: ItemState) -> bool:
        """Mark ``item`` decided; False when something decided it first."""
        with self.lock:
            if item.decided:
                return False
            item.decided = True
            return True

    def due(self, now: float) -> list[ItemState]:
        """Undecided items whose ``decide_by`` has passed (taken off the deadline heap)."""
        due = []
        with self.lock:
            while self.deadlines and self.deadlines[0][0] <= now:
                _, no = heapq.heappop(self.deadlines)
                it = self.items.get(no)
                if it is not None and not it.decided:
                    due.append(it)
        return due

    def in_flight(self) -> int:
        """Items admitted and not yet decided."""
        with self.lock:
            return self.counters["items"] - self.counters["decisions"]

    def pending(self) -> bool:
        with self.lock:
            return any(not it.decided for it in self.items.values()) or bool(self.unsent)

    def take_unsent(self) -> list[ItemState]:
        with self.lock:
            waiting, self.unsent = self.unsent, []
        return waiting

    def add_unsent(self, items: list[ItemState]) -> None:
        with self.lock:
            self.unsent.extend(items)

    def last_gate_time(self) -> float:
        with self.lock:
            return max((it.deadline for it in self.items.values() if it.decision == "divert"), default=0.0)

    def forget_past(self, now: float, after_s: float = 5.0) -> None:
        """Drop decided items well past their gate (their record is in the event log)."""
        if self.keep_items:
            return
        with self.lock:
            if len(self.items) < 64:
                return
            old = [no for no, it in self.items.items()
                   if it.decided and now > it.deadline + after_s and it not in self.unsent]
            for no in old:
                del self.items[no]


Beat = Callable[[str], None]  # a stage's heartbeat to the watchdog


def each(q: queue.Queue, stop: threading.Event, beat: Beat, stage: str) -> Iterator:
    """What arrives on ``q`` until ``stop`` is set; the stage beats the watchdog at least every 0.2 s."""
    while not stop.is_set():
        beat(stage)
        try:
            yield q.get(timeout=0.2)
        except queue.Empty:
            continue
