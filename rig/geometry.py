"""Small geometry shared by the runtime and the simulator: item boxes and camera ROIs."""

from __future__ import annotations

import numpy as np

from ..calibration.model import CameraModel

ROI_PAD = 0.25  # share of the projected box added on each side (spills and thin card edges)
ROI_MIN_PX = 48


def box_corners(center_xy_m, size_xy_m, yaw: float, height_m: float) -> np.ndarray:
    """8x3 corners (belt frame, metres) of an upright box on the belt."""
    cx, cy = center_xy_m
    hx, hy = size_xy_m[0] / 2, size_xy_m[1] / 2
    c, s = np.cos(yaw), np.sin(yaw)
    pts = []
    for sx in (-hx, hx):
        for sy in (-hy, hy):
            for z in (0.0, height_m):
                pts.append([cx + c * sx - s * sy, cy + s * sx + c * sy, z])
    return np.array(pts)


def roi_from_corners(camera: CameraModel, corners_m: np.ndarray, pad: float = ROI_PAD
                     ) -> tuple[int, int, int, int] | None:
    """The square pixel box (x0, y0, x1, y1), exclusive ends, around the projection of
    ``corners_m`` padded by ``pad`` on each side and clipped to the image; None when
    the box is behind the camera or too little of it is in view."""
    uv, z = camera.project(np.asarray(corners_m, float))
    if np.any(z <= 0):
        return None
    (u0, v0), (u1, v1) = uv.min(0), uv.max(0)
    side = max(u1 - u0, v1 - v0) * (1 + 2 * pad)
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    w, h = camera.size
    side = min(max(side, ROI_MIN_PX), min(w, h))
    x0 = int(round(min(max(cu - side / 2, 0), w - side)))
    y0 = int(round(min(max(cv - side / 2, 0), h - side)))
    s = int(round(side))
    x1, y1 = min(x0 + s, w), min(y0 + s, h)
    if x1 - x0 < ROI_MIN_PX // 2 or y1 - y0 < ROI_MIN_PX // 2:
        return None
    return x0, y0, x1, y1
