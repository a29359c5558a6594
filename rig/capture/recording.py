"""`recording` capture: a .db3 recording played back through pyrealsense2, paced at its fps.

Playback goes through librealsense itself (realsense_io.Recording); frames
are delivered at the recording's frame rate on the host clock so the pipeline
sees the timing a live camera would give. Timestamps are the recording's own.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..foundation.errors import DeviceError
from . import CAPTURE
from .base import Grab
from .realsense_io import Recording
from .sources import SourceGroup


class RecordingCamera:
    name = "recording"

    def __init__(self, camera: str, path: str | Path, realtime: bool = True):
        self.camera = camera
        self.path = Path(path)
        self.rec = Recording(self.path)  # raises DeviceError with the reason
        self.color_size = tuple(self.rec.color_size)
        self.depth_size = tuple(self.rec.depth_size)
        self.realtime = realtime
        self._it = None
        self._t0 = None
        self._done = False

    def open(self) -> None:
        if self._it is None:
            self._it = iter(self.rec.frames())
            self._t0 = None

    @property
    def finished(self) -> bool:
        return self._done

    def grab(self, timeout_s: float) -> Grab | None:
        if self._it is None:
            raise DeviceError(f"recording {self.path} is not open")
        try:
            f = next(self._it)
        except StopIteration:
            self._done = True
            return None
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = (now, f.timestamp_ms)
        host_time = self._t0[0] + (f.timestamp_ms - self._t0[1]) / 1000.0
        if self.realtime and host_time > now:
            time.sleep(host_time - now)
        return Grab(f.color, f.depth, f.timestamp_ms, f.index, host_time)

    def close(self) -> None:
        self._it = None


@CAPTURE.register("recording")
def open_recordings(cfg, calib, cams):
    """``source: recording`` cameras, each playing its .db3 file (relative to the config)."""
    return SourceGroup({c.name: RecordingCamera(c.name, cfg.resolve(c.recording)) for _, c in cams})
