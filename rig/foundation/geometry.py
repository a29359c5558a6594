"""Small geometry shared by the runtime, the kernels and the simulator: camera ROIs and
librealsense's depth-to-colour pixel rule. Imports nothing of the project."""

from __future__ import annotations

import numpy as np

ROI_PAD = 0.25  # share of the projected box added on each side (spills and thin card edges)
ROI_MIN_PX = 48
F32 = np.float32


def roi_from_corners(camera, corners_m: np.ndarray, pad: float = ROI_PAD
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


def align_window(window, color_size) -> tuple[int, int, int, int]:
    """``window`` (x0, y0, x1, y1, exclusive ends; None = the whole image) checked against the
    colour image's (width, height); returns it as ints. ValueError names what is wrong."""
    cw, ch = (int(v) for v in color_size)
    if window is None:
        return 0, 0, cw, ch
    try:
        x0, y0, x1, y1 = (int(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be (x0, y0, x1, y1), got {window!r}") from None
    if not (0 <= x0 < x1 <= cw and 0 <= y0 < y1 <= ch):
        raise ValueError(f"window {(x0, y0, x1, y1)} is not a non-empty box inside the {cw}x{ch} colour image")
    return x0, y0, x1, y1


def _fov_deg(K: np.ndarray, w: int, h: int) -> tuple[float, float]:
    """librealsense's rs2_fov, in float32 like the C code."""
    fx, fy, ppx, ppy = F32(K[0, 0]), F32(K[1, 1]), F32(K[0, 2]), F32(K[1, 2])
    half = F32(0.5)
    fov_x = (np.arctan2(ppx + half, fx) + np.arctan2(F32(w) - (ppx + half), fx)) * F32(57.2957795)
    fov_y = (np.arctan2(ppy + half, fy) + np.arctan2(F32(h) - (ppy + half), fy)) * F32(57.2957795)
    return float(fov_x), float(fov_y)


def uses_pixel_rectangles(depth_K, depth_size, color_K, color_size) -> bool:
    """True when rs.align fills the rectangle between a depth pixel's two projected
    corners; False when it writes only the top-left corner's colour pixel.

    librealsense takes the rectangle when the colour image has more pixels per degree
    than the depth image on either axis (fov by rs2_fov), or for the two special
    resolution pairs 640x240 -> 320x180 and 640x480 -> 640x360.
    """
    dw, dh = (int(v) for v in depth_size)
    cw, ch = (int(v) for v in color_size)
    dfx, dfy = _fov_deg(np.asarray(depth_K, float), dw, dh)
    cfx, cfy = _fov_deg(np.asarray(color_K, float), cw, ch)
    ppa_d = (F32(dw) / F32(dfx), F32(dh) / F32(dfy))
    ppa_c = (F32(cw) / F32(cfx), F32(ch) / F32(cfy))
    special = ((dw, dh, cw, ch) in ((640, 240, 320, 180), (640, 480, 640, 360)))
    return bool(ppa_d[0] < ppa_c[0] or ppa_d[1] < ppa_c[1] or special)
