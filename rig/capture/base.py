"""Frames, the preallocated frame ring, and the camera worker thread.

A backend (one file each: sim.py, recording.py, realsense.py) only knows how to
``open()``, ``grab()`` one colour + depth pair and ``close()``. The
:class:`CameraWorker` around it owns the thread: it copies each grabbed frame
into a free slot of a preallocated :class:`FrameRing` and puts the slot's
reference on a bounded queue. When no slot is free or the queue is full the
frame is dropped and counted — capture never blocks on the pipeline. A backend
error closes it, waits ``reconnect_s`` and opens it again (counted).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..foundation.errors import DeviceError

log = logging.getLogger(__name__)


@dataclass
class Grab:
    color: np.ndarray  # HxWx3 uint8 RGB (colour imager)
    depth: np.ndarray  # HxW uint16 (depth imager, its own units)
    timestamp_ms: float  # the camera's clock (hardware timestamp)
    frame_number: int
    host_time: float  # time.monotonic() at exposure, best estimate


class CaptureBackend(Protocol):
    name: str
    camera: str
    color_size: tuple[int, int]
    depth_size: tuple[int, int]

    def open(self) -> None: ...

    def grab(self, timeout_s: float) -> Grab | None:
        """The next frame pair, or None when none came within timeout_s (or the source ended)."""
        ...

    def close(self) -> None: ...

    @property
    def finished(self) -> bool:
        """True when a finite source (a recording) has delivered everything."""
        ...


@dataclass
class FrameRef:
    """What the queues carry: the ring and slot holding one camera's frame."""

    camera: str
    ring: FrameRing
    slot: int
    timestamp_ms: float
    frame_number: int
    host_time: float

    @property
    def color(self) -> np.ndarray:
        return self.ring.color[self.slot]

    @property
    def depth(self) -> np.ndarray:
        return self.ring.depth[self.slot]

    def hold(self) -> FrameRef:
        self.ring.hold(self.slot)
        return self

    def release(self) -> None:
        self.ring.release(self.slot)


class FrameRing:
    """``slots`` preallocated colour + depth buffers with reference counts."""

    def __init__(self, slots: int, color_size: tuple[int, int], depth_size: tuple[int, int]):
        w, h = color_size
        dw, dh = depth_size
        self.color = np.zeros((slots, h, w, 3), np.uint8)
        self.depth = np.zeros((slots, dh, dw), np.uint16)
        self._refs = [0] * slots
        self._lock = threading.Lock()
        self._next = 0

    def acquire(self) -> int | None:
        """A free slot (its count set to 1), or None when every slot is held."""
        with self._lock:
            n = len(self._refs)
            for k in range(n):
                i = (self._next + k) % n
                if self._refs[i] == 0:
                    self._refs[i] = 1
                    self._next = (i + 1) % n
                    return i
        return None

    def hold(self, slot: int) -> None:
        with self._lock:
            self._refs[slot] += 1

    def release(self, slot: int) -> None:
        with self._lock:
            if self._refs[slot] <= 0:
                raise RuntimeError(f"frame slot {slot} released more often than held")
            self._refs[slot] -= 1

    @property
    def in_use(self) -> int:
        with self._lock:
            return sum(1 for r in self._refs if r)


@dataclass
class CameraStats:
    frames: int = 0
    dropped: int = 0  # no free slot or queue full
    errors: int = 0
    reconnects: int = 0
    last_frame_at: float = 0.0
    fps: float = 0.0
    _window: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "dropped": self.dropped, "errors": self.errors,
                "reconnects": self.reconnects, "fps": round(self.fps, 2),
                "last_frame_age_s": round(time.monotonic() - self.last_frame_at, 3) if self.last_frame_at else None}


class CameraWorker:
    """Runs one backend in its own thread and feeds ``out`` with FrameRefs."""

    def __init__(self, backend: CaptureBackend, out: queue.Queue, slots: int = 8, reconnect_s: float = 2.0,
                 on_frame=None):
        self.backend = backend
        self.out = out
        self.ring = FrameRing(slots, backend.color_size, backend.depth_size)
        self.reconnect_s = reconnect_s
        self.stats = CameraStats()
        self.on_frame = on_frame  # progress callback (watchdog)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{backend.camera}", daemon=True)
        self.finished = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)

    def _open(self) -> bool:
        try:
            self.backend.open()
            return True
        except DeviceError as exc:
            self.stats.errors += 1
            log.error("camera %s: %s; retrying in %.1f s", self.backend.camera, exc, self.reconnect_s)
            return False

    def _run(self) -> None:
        opened = self._open()
        while not self._stop.is_set():
            if not opened:
                if self._stop.wait(self.reconnect_s):
                    break
                self.stats.reconnects += 1
                opened = self._open()
                continue
            try:
                grab = self.backend.grab(timeout_s=0.5)
            except DeviceError as exc:
                self.stats.errors += 1
                log.error("camera %s: %s; reconnecting", self.backend.camera, exc)
                self._close()
                opened = False
                continue
            if grab is None:
                if self.backend.finished:
                    break
                continue
            self._deliver(grab)
        self._close()
        self.finished.set()

    def _close(self) -> None:
        try:
            self.backend.close()
        except DeviceError as exc:
            log.warning("camera %s: close failed: %s", self.backend.camera, exc)

    def _deliver(self, g: Grab) -> None:
        st = self.stats
        st.frames += 1
        now = time.monotonic()
        st.last_frame_at = now
        st._window.append(now)
        if len(st._window) > 30:
            del st._window[0]
        if len(st._window) >= 2:
            st.fps = (len(st._window) - 1) / max(st._window[-1] - st._window[0], 1e-6)
        if self.on_frame is not None:
            self.on_frame(self.backend.camera)
        if g.color.shape != self.ring.color.shape[1:] or g.depth.shape != self.ring.depth.shape[1:]:
            st.errors += 1
            log.error("camera %s: frame of size colour %s depth %s, expected %s and %s; dropped",
                      self.backend.camera, g.color.shape, g.depth.shape, self.ring.color.shape[1:],
                      self.ring.depth.shape[1:])
            st.dropped += 1
            return
        if g.color.dtype != np.uint8 or g.depth.dtype != np.uint16:
            # e.g. float depth with NaN from a broken driver: copying it into the uint16 ring would
            # raise inside this thread and stop the camera for good
            st.errors += 1
            st.dropped += 1
            log.error("camera %s: frame of dtype colour %s depth %s, expected uint8 and uint16; dropped",
                      self.backend.camera, g.color.dtype, g.depth.dtype)
            return
        slot = self.ring.acquire()
        if slot is None:
            st.dropped += 1
            return
        np.copyto(self.ring.color[slot], g.color)
        np.copyto(self.ring.depth[slot], g.depth)
        ref = FrameRef(self.backend.camera, self.ring, slot, g.timestamp_ms, g.frame_number, g.host_time)
        try:
            self.out.put_nowait(ref)
        except queue.Full:
            ref.release()
            st.dropped += 1
