"""Frame ring, camera worker and timestamp sync: drops are counted, capture never blocks."""

from __future__ import annotations

import queue
import time

import numpy as np
from damage_rig.rig.capture import CameraWorker, FrameRing, FrameSync, Grab
from damage_rig.rig.capture.base import FrameRef


class CountingSource:
    """A real capture backend shape over synthetic frames: frame n has pixel value n % 256."""

    name = "synthetic"

    def __init__(self, camera="cam", n_frames=200, size=(32, 24), fps=None):
        self.camera = camera
        self.color_size = size
        self.depth_size = size
        self.n = 0
        self.n_frames = n_frames
        self.fps = fps
        self.opened = 0

    def open(self):
        self.opened += 1

    @property
    def finished(self):
        return self.n >= self.n_frames

    def grab(self, timeout_s):
        if self.finished:
            return None
        if self.fps:
            time.sleep(1.0 / self.fps)
        w, h = self.color_size
        g = Grab(np.full((h, w, 3), self.n % 256, np.uint8), np.full((h, w), self.n, np.uint16),
                 self.n * 10.0, self.n, time.monotonic())
        self.n += 1
        return g

    def close(self):
        pass


def _ref(ring, cam, ts):
    slot = ring.acquire()
    return FrameRef(cam, ring, slot, ts, int(ts), 0.0)


def test_full_queue_drops_and_counts_without_blocking_capture():
    q = queue.Queue(maxsize=2)
    src = CountingSource(n_frames=300)
    w = CameraWorker(src, q, slots=4)
    w.start()
    assert w.finished.wait(10), "capture blocked on a full queue"
    assert w.stats.frames == 300
    assert q.qsize() == 2
    assert w.stats.dropped == 298
    # the queued frames are intact references into the ring
    a, b = q.get(), q.get()
    assert a.color[0, 0, 0] == a.frame_number % 256 and b.depth[0, 0] == b.frame_number
    a.release(), b.release()
    assert w.ring.in_use == 0


def test_ring_exhaustion_drops_instead_of_overwriting_held_frames():
    q = queue.Queue(maxsize=100)
    src = CountingSource(n_frames=20)
    w = CameraWorker(src, q, slots=3)
    w.start()
    assert w.finished.wait(10)
    held = [q.get() for _ in range(3)]
    assert [h.frame_number for h in held] == [0, 1, 2]
    assert w.stats.dropped == 17  # every slot held: later frames dropped, held ones untouched
    assert [h.color[0, 0, 0] for h in held] == [0, 1, 2]


def test_sync_matches_within_tolerance_and_drops_the_unmatchable():
    ring = FrameRing(16, (4, 4), (4, 4))
    s = FrameSync(["a", "b"], tolerance_ms=5)
    assert s.push(_ref(ring, "a", 100.0)) == []
    out = s.push(_ref(ring, "b", 103.0))
    assert len(out) == 1 and out[0]["a"].timestamp_ms == 100.0 and out[0]["b"].timestamp_ms == 103.0
    for f in out[0].values():
        f.release()
    # a frame of 'a' whose partner never came is dropped once 'b' has moved on
    s.push(_ref(ring, "a", 200.0))
    s.push(_ref(ring, "a", 233.0))
    out = s.push(_ref(ring, "b", 231.0))
    assert [(o["a"].timestamp_ms, o["b"].timestamp_ms) for o in out] == [(233.0, 231.0)]
    assert s.dropped == 1
    for f in out[0].values():
        f.release()
    s.flush()
    assert ring.in_use == 0


def test_camera_worker_reconnects_after_a_device_error():
    from damage_rig.rig.foundation.errors import DeviceError

    class Flaky(CountingSource):
        def grab(self, timeout_s):
            if self.n == 5 and self.opened == 1:
                raise DeviceError("USB reset")
            return super().grab(timeout_s)

    q = queue.Queue(maxsize=100)
    src = Flaky(n_frames=10)
    w = CameraWorker(src, q, slots=16, reconnect_s=0.01)
    w.start()
    assert w.finished.wait(10)
    assert src.opened == 2 and w.stats.reconnects == 1 and w.stats.errors == 1
    assert w.stats.frames == 10


def test_primary_camera_goes_on_alone_when_a_partner_stops():
    ring = FrameRing(32, (4, 4), (4, 4))
    s = FrameSync(["top", "side"], tolerance_ms=5, max_pending=6, primary="top", stale_ms=100)
    out = []
    for k in range(3):  # both cameras: complete sets
        out += s.push(_ref(ring, "side", k * 33.0))
        out += s.push(_ref(ring, "top", k * 33.0 + 1))
    assert [sorted(o) for o in out] == [["side", "top"]] * 3
    partial = []
    for k in range(3, 10):  # the side camera stopped
        partial += s.push(_ref(ring, "top", k * 33.0 + 1))
    # top frames older than 100 ms behind the newest go on alone, in order, none lost
    assert [list(o) for o in partial] == [["top"]] * 3
    assert [o["top"].timestamp_ms for o in partial] == [100.0, 133.0, 166.0]
    assert s.partial == 3 and s.dropped == 0
    for o in out + partial:
        for f in o.values():
            f.release()
    s.flush()
    assert ring.in_use == 0


def test_sync_matches_a_partner_frame_that_arrives_after_the_primarys_next_one():
    """The side camera's frame for t=0 arrives late (after top's t=33 frame): it is still matched
    to top's t=0 frame, and the next pair after it; nothing is dropped."""
    ring = FrameRing(8, (4, 4), (4, 4))
    s = FrameSync(["top", "side"], tolerance_ms=5, primary="top", stale_ms=200)
    assert s.push(_ref(ring, "top", 0.0)) == []
    assert s.push(_ref(ring, "top", 33.3)) == []  # its partner is late, not lost: wait
    sets = s.push(_ref(ring, "side", 0.7))
    assert [{c: f.timestamp_ms for c, f in fs.items()} for fs in sets] == [{"top": 0.0, "side": 0.7}]
    sets = s.push(_ref(ring, "side", 34.0))
    assert [{c: f.timestamp_ms for c, f in fs.items()} for fs in sets] == [{"top": 33.3, "side": 34.0}]
    assert s.dropped == 0 and s.partial == 0


def test_sync_keeps_the_trigger_cameras_frame_when_its_partner_is_lost():
    """The side camera never delivers its t=0 frame (its next one is t=33.7): top's t=0 frame still
    goes on, alone, instead of being dropped as the older unmatched head; then pairs resume."""
    ring = FrameRing(8, (4, 4), (4, 4))
    s = FrameSync(["top", "side"], tolerance_ms=5, primary="top", stale_ms=200)
    assert s.push(_ref(ring, "top", 0.0)) == []
    sets = s.push(_ref(ring, "side", 33.7))
    assert [sorted(fs) for fs in sets] == [["top"]] and sets[0]["top"].timestamp_ms == 0.0
    sets = s.push(_ref(ring, "top", 33.3))
    assert [{c: f.timestamp_ms for c, f in fs.items()} for fs in sets] == [{"top": 33.3, "side": 33.7}]
    assert s.partial == 1 and s.dropped == 0
    # a partner's frame that lost its primary is still dropped (only the trigger camera is kept)
    sets = s.push(_ref(ring, "side", 66.7))
    sets += s.push(_ref(ring, "side", 100.0))
    sets += s.push(_ref(ring, "top", 100.1))
    assert [{c: f.timestamp_ms for c, f in fs.items()} for fs in sets] == [{"top": 100.1, "side": 100.0}]
    assert s.dropped == 1
