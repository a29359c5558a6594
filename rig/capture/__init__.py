"""Capture: one backend per file (sim, recording, realsense), chosen by each camera's `source`."""

from __future__ import annotations

from ...calibration.model import Calibration
from ..config import RigConfig
from .base import CameraWorker, FrameRef, FrameRing, Grab
from .sync import FrameSync


def make_cameras(cfg: RigConfig, calib: Calibration, sim_belt=None, sim_faults: dict | None = None) -> list:
    """The configured backends, in config order. ``sim_belt`` serves the `sim` cameras.

    ``sim_faults`` ({camera: [{kind, at_s, for_s}, ...]}) injects faults into sim cameras (tests, fault table).
    """
    cams = []
    for i, c in enumerate(cfg.cameras):
        if c.source == "sim":
            if sim_belt is None:
                from .sim import SimBelt

                sim_belt = SimBelt(calib, [x.name for x in cfg.cameras if x.source == "sim"],
                                   cfg.belt.speed_mps or 0.5, cfg.belt.item_pitch_m)
            from .sim import SimCamera

            cams.append(SimCamera(sim_belt, c.name, c.fps, offset_ms=0.7 * i,
                                  faults=(sim_faults or {}).get(c.name, ())))
        elif c.source == "recording":
            from .recording import RecordingCamera

            cams.append(RecordingCamera(c.name, cfg.resolve(c.recording)))
        else:
            from .realsense import RealSenseCamera

            cams.append(RealSenseCamera(c.name, c.serial, c.resolution, c.fps))
    return cams


__all__ = ["CameraWorker", "FrameRef", "FrameRing", "FrameSync", "Grab", "make_cameras"]
