"""Stage: match frames across cameras, run the trigger, admit each captured item.

Frame sets come out of :class:`FrameSync`; the trigger camera's depth drives
the :class:`Trigger`; each capture it releases becomes an :class:`ItemState`
with its gate deadline, queued for preparation, or decided at once by the
fail-safe when a camera is missing or the queue is full.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from ..capture.sync import FrameSync
from ..foundation.item_ids import ItemIds
from ..trigger import Capture, Trigger
from .clock import StageClock
from .items import Beat, ItemState, Ledger, each

log = logging.getLogger(__name__)


class SyncTrigger:
    def __init__(self, frames_q: queue.Queue, sync: FrameSync, trigger: Trigger, trigger_camera: str,
                 clock: StageClock, beat: Beat):
        self.frames_q = frames_q
        self.sync = sync
        self.trigger = trigger
        self.trigger_camera = trigger_camera
        self.clock = clock
        self.beat = beat
        self.lock = threading.Lock()  # the trigger's state: updated here, flushed at shutdown
        self.on_capture: Callable[[Capture], None] = lambda cap: None

    def loop(self, stop: threading.Event) -> None:
        for ref in each(self.frames_q, stop, self.beat, "trigger"):
            self.push(ref)

    def push(self, ref) -> None:
        t0 = time.monotonic()
        sets = self.sync.push(ref)
        t1 = time.monotonic()
        for fs in sets:
            self.clock.add("sync", t0, t1)
            trig = fs[self.trigger_camera]
            self.clock.add("capture", trig.host_time, t0)
            t2 = time.monotonic()
            with self.lock:
                caps = self.trigger.update(fs, trig.depth, trig.host_time, trig.timestamp_ms)
            self.clock.add("trigger", t2, time.monotonic())
            for f in fs.values():
                f.release()
            for cap in caps:
                self.on_capture(cap)

    def flush(self) -> list[Capture]:
        """Items the trigger still holds (at shutdown)."""
        with self.lock:
            return self.trigger.flush()


class Admission:
    """A capture becomes an item: its id, its gate deadline, its place in the prepare queue."""

    def __init__(self, cfg, ledger: Ledger, capture_q: queue.Queue, cam_names: list[str], speed: float,
                 failsafe: Callable[[ItemState, str], None], truth_fn=None, item_ids: ItemIds | None = None):
        self.cfg = cfg
        self.ledger = ledger
        self.capture_q = capture_q
        self.cam_names = cam_names
        self.speed = speed
        self.failsafe = failsafe
        self.truth_fn = truth_fn
        self.expected = None  # the upstream scans (rig/scan.ExpectedProducts), when the rig has a scan input
        self.run_id = time.strftime("%Y%m%dT%H%M%S")
        self.ids = item_ids or ItemIds()  # u64, unique across restarts and years (foundation/item_ids.py)

    def __call__(self, cap: Capture) -> None:
        no = self.ids.next()  # the DIVERT frame carries it (u64, serial protocol version 2)
        dist = self.cfg.belt.gate_distance_m - cap.blob.x
        deadline = cap.host_time + dist / self.speed
        margin = (self.cfg.divert.ack_timeout_ms * (self.cfg.divert.retries + 1)) / 1000.0
        item = ItemState(no, f"{self.run_id}-{cap.item_no:06d}", cap, fire_at=-1, deadline=deadline,
                         decide_by=deadline - margin, dist_m=dist)
        if self.truth_fn is not None:
            item.truth = self.truth_fn(cap)
        if self.expected is not None:
            item.scan = self.expected.match(cap.host_time, cap.blob.x)
        self.ledger.admit(item)
        missing = sorted(set(self.cam_names) - set(cap.frames))
        if missing:  # a camera is down: this item cannot be seen from every side
            log.warning("item %s: no frame from %s; fail-safe", item.item_id, ", ".join(missing))
            self.failsafe(item, "camera_missing")
            return
        try:
            self.capture_q.put_nowait(item)
        except queue.Full:
            self.ledger.count("overload")
            self.failsafe(item, "overload")
