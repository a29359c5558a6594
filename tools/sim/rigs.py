"""Camera tunnels of known geometry: the demo rig and a 3-camera Jetson example.

The belt frame: x along travel, y across the belt, z up, z = 0 the belt surface,
x = 0 the centre of the camera tunnel. Each camera carries a RealSense-like
depth imager 15 mm beside its colour imager with its own intrinsics.
"""

from __future__ import annotations

import numpy as np

from ...calibration.model import Calibration, CameraModel, DepthModel, look_at, rotation


def intrinsics(w: int, h: int, hfov_deg: float, cx_off=0.0, cy_off=0.0) -> np.ndarray:
    f = (w / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0, w / 2 - 0.5 + cx_off], [0, f, h / 2 - 0.5 + cy_off], [0, 0, 1.0]])


def _depth_model(w: int, h: int) -> DepthModel:
    T = np.eye(4)
    T[:3, :3] = rotation("y", 0.25) @ rotation("x", -0.15)
    T[:3, 3] = [-0.015, 0.0002, 0.0004]  # depth imager 15 mm left of the colour imager
    return DepthModel(K=intrinsics(w, h, 74.0, 1.3, -0.8), size=(w, h), T_color_depth=T,
                      depth_units_mm=1.0)


def _camera(name, eye, target, w, h, hfov, with_depth=True) -> CameraModel:
    return CameraModel(name=name, K=intrinsics(w, h, hfov, 2.1, -1.4), dist=np.zeros(5), size=(w, h),
                       T_ref_cam=look_at(eye, target), depth=_depth_model(w, h) if with_depth else None)


def demo_calibration(w: int = 640, h: int = 480) -> Calibration:
    """Two cameras over the belt: one looking straight down, one from the side at ~45 degrees."""
    cams = {
        "top": _camera("top", (0.0, 0.0, 0.80), (0.0, 0.0, 0.0), w, h, 58.0),
        "side": _camera("side", (0.0, -0.55, 0.55), (0.0, 0.0, 0.04), w, h, 58.0),
    }
    return Calibration(cameras=cams, belt={"reference": "belt", "source": "design"})


def jetson_3cam_calibration(w: int = 1280, h: int = 720) -> Calibration:
    """The example 3-camera Jetson tunnel: top, side_left and side_right."""
    cams = {
        "top": _camera("top", (0.0, 0.0, 0.90), (0.0, 0.0, 0.0), w, h, 69.0),
        "side_left": _camera("side_left", (0.05, -0.60, 0.50), (0.0, 0.0, 0.05), w, h, 69.0),
        "side_right": _camera("side_right", (-0.05, 0.60, 0.50), (0.0, 0.0, 0.05), w, h, 69.0),
    }
    return Calibration(cameras=cams, belt={"reference": "belt", "source": "design"})
