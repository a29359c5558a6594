"""Depth-to-colour alignment: the CPU reference of librealsense's ``rs.align``.

:func:`align_depth_to_color` reproduces, bit for bit, what ``rs.align(rs.stream.color)``
computes for a Z16 depth frame on x86 (librealsense's SSE path), for pinhole
cameras (no distortion on either side). The GPU kernel and its CPU twin in
``kernels/`` are tested for *identity* against this function, so every rounding
step is spelled out in the docstring and the code follows it literally.
"""

from __future__ import annotations

import numpy as np

from ..rig.foundation.errors import CalibrationError
from ..rig.foundation.geometry import align_window, uses_pixel_rectangles

F32 = np.float32
_INT_MIN = np.int32(-(2**31))


def _check_inputs(depth, depth_K, color_K, color_size, T_color_depth):
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise CalibrationError(
            f"align_depth_to_color: depth must be a 2-D uint16 array, got shape {depth.shape} "
            f"dtype {depth.dtype}")
    for name, m, shape in (("depth_K", depth_K, (3, 3)), ("color_K", color_K, (3, 3)),
                           ("T_color_depth", T_color_depth, (4, 4))):
        if np.asarray(m).shape != shape:
            raise CalibrationError(
                f"align_depth_to_color: {name} must be {shape}, got {np.asarray(m).shape}")
    try:
        w, h = (int(v) for v in color_size)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"align_depth_to_color: color_size must be (width, height), got {color_size!r}") from None
    if w <= 0 or h <= 0:
        raise CalibrationError(f"align_depth_to_color: color_size must be positive, got {color_size!r}")
    return depth, w, h


def _trunc_to_int32(v: np.ndarray) -> np.ndarray:
    """C's (int) cast on x86 (cvttss2si): toward zero; NaN or out of int32 range -> INT32_MIN."""
    with np.errstate(invalid="ignore"):
        r = np.trunc(v)
        bad = ~np.isfinite(r) | (r >= F32(2.0**31)) | (r < F32(-(2.0**31)))
        out = np.where(bad, 0, r).astype(np.int32)
    out[bad] = _INT_MIN
    return out


def _corner_pixels(depth, offset, depth_K, color_K, T, scale):
    """Colour pixel index (int32 u, v) of each depth pixel's corner at ``offset``."""
    hd, wd = depth.shape
    dfx, dfy, dppx, dppy = F32(depth_K[0, 0]), F32(depth_K[1, 1]), F32(depth_K[0, 2]), F32(depth_K[1, 2])
    off = F32(offset)
    xs = ((np.arange(wd, dtype=F32) + off) - dppx) / dfx          # (float)w + offset, - ppx, / fx
    ys = ((np.arange(hd, dtype=F32) + off) - dppy) / dfy
    z = depth.astype(F32) * scale                                   # metres
    px = z * xs[None, :]
    py = z * ys[:, None]
    R = T[:3, :3].astype(F32)
    t = T[:3, 3].astype(F32)
    X = R[0, 0] * px + (R[0, 1] * py + (R[0, 2] * z + t[0]))
    Y = R[1, 0] * px + (R[1, 1] * py + (R[1, 2] * z + t[1]))
    Z = R[2, 0] * px + (R[2, 1] * py + (R[2, 2] * z + t[2]))
    cfx, cfy, cppx, cppy = F32(color_K[0, 0]), F32(color_K[1, 1]), F32(color_K[0, 2]), F32(color_K[1, 2])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        u = (X / Z) * cfx + cppx
        v = (Y / Z) * cfy + cppy
        u = u + F32(0.5)
        v = v + F32(0.5)
    return _trunc_to_int32(u), _trunc_to_int32(v)


def align_depth_to_color(depth: np.ndarray, depth_K: np.ndarray, color_K: np.ndarray,
                         color_size: tuple[int, int], T_color_depth: np.ndarray,
                         depth_units_m: float, window=None) -> np.ndarray:
    """Depth (uint16, Hd x Wd) re-sampled onto the colour image grid (uint16, Hc x Wc).

    Exactly librealsense's x86 ``rs.align`` for pinhole cameras. All arithmetic is IEEE
    float32, one rounding per operation (no fused multiply-add), in this order:

    1. Constants are cast to float32: ``fx, fy, ppx, ppy`` of both cameras (``K[0,0],
       K[1,1], K[0,2], K[1,2]``), ``R = T_color_depth[:3,:3]``, ``t = T_color_depth[:3,3]``
       and ``s = depth_units_m``.
    2. For a depth pixel (column ``i``, row ``j``) with raw value ``d != 0`` and a corner
       offset ``o`` (``-0.5`` for the top-left corner, ``+0.5`` for the bottom-right)::

           x  = ((float)i + o - dppx) / dfx        y = ((float)j + o - dppy) / dfy
           z  = (float)d * s
           px = z * x                               py = z * y
           X  = R00*px + (R01*py + (R02*z + t0))    (same pattern for Y with row 1, Z row 2)
           u  = (X / Z) * cfx + cppx + 0.5          v = (Y / Z) * cfy + cppy + 0.5
           U  = (int)u   V = (int)v                 truncation toward zero (C cast), so
                                                    u in (-1, 0) gives 0;
                                                    NaN/inf/out of int32 -> INT32_MIN

       (Measured against pyrealsense2 2.59 on x86: truncation of ``u + 0.5`` matches
       every pixel; librealsense's SSE source reads as round-to-nearest, which does not.)
    3. Rectangle or point (:func:`uses_pixel_rectangles`): when the colour image has
       more pixels per degree than the depth image (or a special resolution pair), the
       pixel covers every colour pixel ``(x, y)`` with ``U_tl <= x <= U_br`` and
       ``V_tl <= y <= V_br`` (inclusive; nothing when ``U_br < U_tl`` or
       ``V_br < V_tl``); otherwise only the single pixel ``(U_tl, V_tl)``.
    4. Clipping: covered pixels outside ``0 <= x < Wc, 0 <= y < Hc`` are skipped one by
       one; the rest of the rectangle is still written (no whole-pixel rejection).
    5. Which depth wins: every output starts at 0; a covered output pixel takes the
       *smallest non-zero* raw value ``d`` among all depth pixels covering it (the order
       of depth pixels does not matter).
    6. Zero handling: depth pixels with ``d == 0`` write nothing; an output pixel that no
       depth pixel covers stays 0. The value written is the raw depth reading in the
       input's units (not re-expressed as a distance along the colour camera's axis).

    Points behind the colour camera (``Z <= 0``) are not rejected, exactly as in
    librealsense; with a rig's geometry they never occur.

    ``window`` (x0, y0, x1, y1; exclusive ends, inside the colour image) computes
    only that part of the output, shape (y1 - y0, x1 - x0): rectangles are clipped
    to the window instead of the image, which skips exactly the pixels outside it,
    so the result equals the full frame's there, bit for bit.
    """
    depth, cw, ch = _check_inputs(depth, depth_K, color_K, color_size, T_color_depth)
    try:
        wx0, wy0, wx1, wy1 = align_window(window, (cw, ch))
    except ValueError as exc:
        raise CalibrationError(f"align_depth_to_color: {exc}") from None
    depth_K = np.asarray(depth_K, float)
    color_K = np.asarray(color_K, float)
    T = np.asarray(T_color_depth, float)
    scale = F32(depth_units_m)
    out = np.zeros((wy1 - wy0, wx1 - wx0), np.uint16)
    valid = depth != 0
    if not valid.any():
        return out

    u0, v0 = _corner_pixels(depth, -0.5, depth_K, color_K, T, scale)
    if uses_pixel_rectangles(depth_K, depth.shape[::-1], color_K, (cw, ch)):
        u1, v1 = _corner_pixels(depth, 0.5, depth_K, color_K, T, scale)
    else:
        u1, v1 = u0, v0

    d = depth[valid]
    # Clip each rectangle to the window (equivalent to skipping outside pixels one by one), in
    # window coordinates from here on.
    x0 = np.maximum(u0[valid].astype(np.int64), wx0) - wx0
    y0 = np.maximum(v0[valid].astype(np.int64), wy0) - wy0
    x1 = np.minimum(u1[valid].astype(np.int64), wx1 - 1) - wx0
    y1 = np.minimum(v1[valid].astype(np.int64), wy1 - 1) - wy0
    keep = (x1 >= x0) & (y1 >= y0)
    d, x0, y0, x1, y1 = d[keep], x0[keep], y0[keep], x1[keep], y1[keep]
    if d.size == 0:
        return out
    ch, cw = out.shape

    # Write the smallest depth per output pixel: 65535 plays "empty" until the end, which
    # is safe because min(empty, d) == d for every uint16 d.
    best = np.full(ch * cw, np.iinfo(np.uint16).max, np.uint16)
    touched = np.zeros(ch * cw, bool)
    w = x1 - x0 + 1
    h = y1 - y0 + 1
    small = (w <= 8) & (h <= 8)
    ds, xs, ys, ws, hs = d[small], x0[small], y0[small], w[small], h[small]
    for dy in range(int(hs.max(initial=0))):
        for dx in range(int(ws.max(initial=0))):
            m = (dx < ws) & (dy < hs)
            if not m.any():
                continue
            idx = (ys[m] + dy) * cw + (xs[m] + dx)
            np.minimum.at(best, idx, ds[m])
            touched[idx] = True
    # Degenerate, very large rectangles (nearly grazing geometry): fill them one by one.
    best2 = best.reshape(ch, cw)
    touched2 = touched.reshape(ch, cw)
    for k in np.flatnonzero(~small):
        sl = (slice(y0[k], y1[k] + 1), slice(x0[k], x1[k] + 1))
        np.minimum(best2[sl], d[k], out=best2[sl])
        touched2[sl] = True
    out[touched2] = best2[touched2]
    return out
