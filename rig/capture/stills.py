"""Synchronised stills from every configured camera, for calibration captures.

One thread per camera keeps grabbing (a sensor does not wait) and keeps its
last few frames; :meth:`StillTaker.take` returns, for the newest moment every
camera has a frame of, one frame per camera whose timestamps lie within the
config's ``capture.sync_tolerance_ms`` — the same rule the rig's FrameSync
applies. Hardware-synchronised cameras (settings.sync_mode master/slave) meet
it on every frame; free-running ones within a frame period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..foundation.errors import DeviceError
from .base import Grab

log = logging.getLogger(__name__)

KEEP = 8  # frames kept per camera


class StillTaker:
    def __init__(self, cameras: dict, tolerance_ms: float):
        self.cameras = cameras
        self.tolerance_ms = tolerance_ms
        self._frames: dict[str, deque[Grab]] = {n: deque(maxlen=KEEP) for n in cameras}
        self._errors: dict[str, str] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n, c), name=f"still-{n}", daemon=True)
                         for n, c in cameras.items()]

    def start(self) -> StillTaker:
        for c in self.cameras.values():
            c.open()
        for t in self._threads:
            t.start()
        return self

    def _run(self, name: str, cam) -> None:
        while not self._stop.is_set():
            try:
                g = cam.grab(0.5)
            except DeviceError as exc:
                with self._cond:
                    self._errors[name] = str(exc)
                    self._cond.notify_all()
                return
            if g is None:
                if cam.finished:
                    with self._cond:
                        self._errors[name] = f"camera {name}: the source ended"
                        self._cond.notify_all()
                    return
                continue
            with self._cond:
                self._frames[name].append(Grab(g.color.copy(), g.depth.copy(), g.timestamp_ms,
                                               g.frame_number, g.host_time))
                self._cond.notify_all()

    def _match(self, after_ms: float) -> dict[str, Grab] | None:
        """The newest set of frames (one per camera) within tolerance, newer than ``after_ms``."""
        first = next(iter(self._frames))
        for ref in reversed(self._frames[first]):
            if ref.timestamp_ms <= after_ms:
                break
            group = {first: ref}
            for name, frames in self._frames.items():
                if name == first:
                    continue
                best = min(frames, key=lambda g: abs(g.timestamp_ms - ref.timestamp_ms), default=None)
                if best is None or abs(best.timestamp_ms - ref.timestamp_ms) > self.tolerance_ms:
                    break
                group[name] = best
            else:
                return group
        return None

    def take(self, timeout_s: float = 10.0, after_ms: float = -1.0) -> dict[str, Grab]:
        """One synchronised set taken after ``after_ms`` (camera clock); DeviceError when none comes."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._errors:
                    raise DeviceError("; ".join(self._errors.values()))
                got = self._match(after_ms)
                if got is not None:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    heads = {n: (f[-1].timestamp_ms if f else None) for n, f in self._frames.items()}
                    raise DeviceError(f"no synchronised set of frames within {timeout_s:g} s (tolerance "
                                      f"{self.tolerance_ms:g} ms; newest timestamps per camera {heads}): "
                                      "check that every camera streams and, for hardware sync, the sync cable "
                                      "and settings.sync_mode")
                self._cond.wait(min(left, 0.2))

    def latest(self, primary: str, timeout_s: float = 2.0, after_ms: float = -1.0) -> dict[str, Grab]:
        """The newest frame of each camera once ``primary`` has one newer than ``after_ms`` (no
        synchronisation: for looking, not for measuring); cameras with no frame yet are left out."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._errors:
                    raise DeviceError("; ".join(self._errors.values()))
                head = self._frames[primary]
                if head and head[-1].timestamp_ms > after_ms:
                    return {n: f[-1] for n, f in self._frames.items() if f}
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeviceError(f"camera {primary}: no new frame within {timeout_s:g} s")
                self._cond.wait(min(left, 0.2))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for c in self.cameras.values():
            c.close()
