"""Stage: crop each view of an item, align its depth inside the crop, preprocess every view at once.

Per item: the ROI of each camera that sees it; depth aligned to colour only
inside that ROI (bit-identical to aligning the whole frame, tests/kernels); then
ONE fused preprocessing call for all views, writing straight into the item's
block of the network's input — the block the batcher runs as the batch when the
item is alone. The item goes on as one :class:`ViewJob`. A bad frame must not
stop the rig: the item fails safe and the stage goes on.
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
        self.busy = False  # working on an item (its views are on the way): the batcher may wait for them

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
        t0, c0 = time.monotonic(), time.thread_time()
        try:
            job = self.views(item)
        except Exception:  # a bad frame must not stop the rig: this item fails safe
            log.exception("item %s: preprocessing failed", item.item_id)
            self.ledger.count("stage_errors")
            self.failsafe(item, "fault")
            return
        finally:
            release(item)
        self.clock.add("preprocess", t0, time.monotonic(), item.no, cpu_s=time.thread_time() - c0)
        item.expected = len(job.views) if job else 0
        if job is None:
            self.failsafe(item, "no_view")
            return
        try:
            self.views_q.put(job, timeout=max(0.0, item.decide_by - time.monotonic()))
        except queue.Full:
            self.ledger.count("overload")
            self.failsafe(item, "overload")

    def views(self, item: ItemState) -> ViewJob | None:
        cap = item.capture
        corners = cap.blob.corners()
        names, images, rois, depths = [], [], [], []
        for name, ref in cap.frames.items():
            cam = self.calib.camera(name)
            roi = roi_from_corners(cam, corners)
            if roi is None:
                continue
            x0, y0, x1, y1 = roi
            rgb = ref.color[y0:y1, x0:x1]
            if rgb.size == 0:
                raise RigError(f"camera {name}: empty crop {roi}")
            depth_crop = None
            if cam.depth is not None:  # aligned inside the ROI only: identical to the full frame's there
                aligned = self.pre.align(ref.depth, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth,
                                         cam.depth.depth_units_mm / 1000.0, window=roi)
                depth_crop = aligned.astype(np.float32) * np.float32(cam.depth.depth_units_mm)
            names.append(name)
            images.append(ref.color)
            rois.append(roi)
            depths.append(depth_crop)
            item.crops[name] = rgb.copy()
        if not names:
            return None
        s = self.scorer
        block = np.empty((len(names), s.channels, s.input_size, s.input_size), np.float32)
        self.pre.run(images, rois, block, 0)  # every view in one fused call, straight into the block
        for k, (name, depth_crop) in enumerate(zip(names, depths)):
            if s.channels > 3:
                block[k, 3:] = s.depth_channel(depth_crop)
            item.canons[name] = s.canon_view(name, item.crops[name], depth_crop)
        return ViewJob(item, names, block, time.monotonic())


def release(item: ItemState) -> None:
    """Give the item's frames back to their rings."""
    frames, item.capture.frames = item.capture.frames, {}
    for f in frames.values():
        f.release()
