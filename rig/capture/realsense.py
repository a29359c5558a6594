"""`realsense` capture: a live RealSense camera selected by serial number.

Colour (RGB8) and depth (Z16) at the configured resolution and frame rate, with
the camera's hardware (global time domain) timestamps. The config's
``settings`` (preset, exposure, gain, laser, sync mode) are written once the
stream runs (realsense_settings.py) and read back into ``applied``. Errors raise DeviceError;
the CameraWorker then closes the pipeline and reconnects.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..foundation.errors import DeviceError
from . import CAPTURE
from .base import Grab
from .realsense_settings import apply_settings
from .sources import SourceGroup

log = logging.getLogger(__name__)

class RealSenseCamera:
    name = "realsense"

    def __init__(self, camera: str, serial: str, resolution: tuple[int, int], fps: int, settings=None):
        try:
            import pyrealsense2 as rs
        except ImportError as exc:
            raise DeviceError(f"camera {camera}: pyrealsense2 is not available ({exc}); install "
                              "'damage-rig[realsense]' and Debian's libusb-1.0-0") from None
        self._rs = rs
        self.camera = camera
        self.serial = serial
        self.color_size = tuple(resolution)
        self.depth_size = tuple(resolution)
        self.fps = fps
        self.settings = settings
        self.applied: dict[str, float] = {}  # settings as read back from the camera
        self._pipe = None

    def open(self) -> None:
        rs = self._rs
        cfg = rs.config()
        cfg.enable_device(self.serial)
        w, h = self.color_size
        cfg.enable_stream(rs.stream.color, w, h, rs.format.rgb8, self.fps)
        cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, self.fps)
        pipe = rs.pipeline()
        try:
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            raise DeviceError(f"camera {self.camera} (serial {self.serial}): cannot start: {exc}") from None
        self._pipe = pipe
        if self.settings is not None:
            try:
                self.applied = apply_settings(profile.get_device(), self.settings, self.camera)
            except DeviceError:
                self.close()
                raise
            log.info("camera %s: settings %s", self.camera, self.applied)

    @property
    def finished(self) -> bool:
        return False

    def grab(self, timeout_s: float) -> Grab | None:
        if self._pipe is None:
            raise DeviceError(f"camera {self.camera}: not open")
        try:
            ok, fs = self._pipe.try_wait_for_frames(int(timeout_s * 1000))
        except RuntimeError as exc:
            raise DeviceError(f"camera {self.camera} (serial {self.serial}): {exc}") from None
        if not ok:
            return None
        c, d = fs.get_color_frame(), fs.get_depth_frame()
        if not c or not d:
            return None
        # the global time domain maps the camera clock onto the host clock (ms since epoch)
        age = max(time.time() * 1000.0 - c.get_timestamp(), 0.0) / 1000.0
        return Grab(np.asanyarray(c.get_data()), np.asanyarray(d.get_data()), c.get_timestamp(),
                    c.get_frame_number(), time.monotonic() - age)

    def close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass
            self._pipe = None


@CAPTURE.register("realsense")
def open_realsense(cfg, calib, cams):
    """``source: realsense`` cameras, each selected by its serial number."""
    return SourceGroup({c.name: RealSenseCamera(c.name, c.serial, c.resolution, c.fps, c.settings)
                        for _, c in cams})
