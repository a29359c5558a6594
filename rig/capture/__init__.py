"""Capture: one backend per file, each registering itself as a camera ``source``.

``CAPTURE`` is the registry the config's ``cameras[].source`` choices come
from: ``realsense`` (live cameras) and ``recording`` (a .db3 played back
through pyrealsense2) live here; ``sim`` (the belt simulator) registers itself
from tools/sim through the ``damage_rig.capture`` entry point, so the runtime
never imports the simulator. :func:`damage_rig.rig.capture.sources.open_sources`
opens the configured cameras.
"""

from __future__ import annotations

from ..foundation.registry import Registry
from .base import CameraWorker, FrameRef, FrameRing, Grab
from .sync import FrameSync

CAPTURE = Registry("capture source", __name__, group="damage_rig.capture")

__all__ = ["CAPTURE", "CameraWorker", "FrameRef", "FrameRing", "FrameSync", "Grab"]
