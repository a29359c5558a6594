"""Stage: crop each view of an item, align its depth, preprocess it into the network's input.

One :class:`ViewJob` per camera that sees the item goes to the batcher. A bad
frame must not stop the rig: the item fails safe and the stage goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from ...calibration.model import Calibration
from ..foundation.errors import RigError
from ..foundation.geometry import roi_from_corners
from ..preprocess.base import Preprocessor
from .clock import StageClock
from .items import Beat, ItemScorer, ItemState, Ledger, ViewJob, each

log = logging.getLogger(__name__)


class Prepare:
    def __init__(self, calib: Calibration, scorer: ItemScorer, pre: Preprocessor, capture_q: queue.Queue,
                 views_q: queue.Queue, ledger: Ledger, clock: StageClock, beat: Beat,
                 failsafe: Callable[[ItemState, str], None]):
        self.calib = calib
        self.scorer = scorer
        self.pre = pre
        self.capture_q = capture_q
        self.views_q = views_q
        self.ledger = ledger
        self.clock = clock
        self.beat = beat
        self.failsafe = failsafe
        self.busy = False  # working on an item (its views are on the way): the batcher waits for them

    def loop(self, stop: threading.Event) -> None:
        for item in each(self.capture_q, stop, self.beat, "prepare"):
            if item.decided:  # the fail-safe got there first
                release(item)
                continue
            self.busy = True
            try:
                self.prepare_item(item)
            finally:
                self.busy = False

    def prepare_item(self, item: ItemState) -> None:
        t0 = time.monotonic()
        try:
            jobs = self.views(item)
        except Exception:  # a bad frame must not stop the rig: this item fails safe
            log.exception("item %s: preprocessing failed", item.item_id)
            self.ledger.count("stage_errors")
            self.failsafe(item, "fault")
            return
        finally:
            release(item)
        self.clock.add("preprocess", t0, time.monotonic(), item.no)
        item.expected = len(jobs)
        if not jobs:
            self.failsafe(item, "no_view")
            return
        for job in jobs:
            try:
                self.views_q.put(job, timeout=max(0.0, item.decide_by - time.monotonic()))
            except queue.Full:
                self.ledger.count("overload")
                self.failsafe(item, "overload")
                return

    def views(self, item: ItemState) -> list[ViewJob]:
        cap = item.capture
        corners = cap.blob.corners()
        jobs = []
        for name, ref in cap.frames.items():
            cam = self.calib.camera(name)
            roi = roi_from_corners(cam, corners)
            if roi is None:
                continue
            x0, y0, x1, y1 = roi
            rgb = ref.color[y0:y1, x0:x1].copy()
            depth_crop = None
            if cam.depth is not None:
                aligned = self.pre.align(ref.depth, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth,
                                         cam.depth.depth_units_mm / 1000.0)
                depth_crop = aligned[y0:y1, x0:x1].astype(np.float32) * np.float32(cam.depth.depth_units_mm)
            if not np.isfinite(rgb).all() or rgb.size == 0:
                raise RigError(f"camera {name}: empty or invalid crop {roi}")
            s = self.scorer
            tensor = np.empty((1, s.channels, s.input_size, s.input_size), np.float32)
            self.pre.run([ref.color], [roi], tensor, 0)
            if s.channels > 3:
                tensor[0, 3:] = s.depth_channel(depth_crop)
            item.crops[name] = rgb
            item.canons[name] = s.canon_view(name, rgb, depth_crop)
            jobs.append(ViewJob(item, name, tensor[0], time.monotonic()))
        return jobs


def release(item: ItemState) -> None:
    """Give the item's frames back to their rings."""
    frames, item.capture.frames = item.capture.frames, {}
    for f in frames.values():
        f.release()
