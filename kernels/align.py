"""Depth-to-colour alignment on the kernel (kernels/align.cu), twin or GPU.

Same signature and, bit for bit, the same result as the CPU reference
:func:`damage_rig.calibration.align.align_depth_to_color` (whose docstring
spells out every rounding step); the rectangle-or-point decision is taken by
the foundation's :func:`uses_pixel_rectangles` (rig/foundation/geometry.py), so there is one rule.
"""

from __future__ import annotations

import numpy as np

from ..rig.foundation.errors import CalibrationError
from ..rig.foundation.geometry import align_window, uses_pixel_rectangles
from ._run import Arg, run_kernels

BLOCK = 256


def align_params(depth_K, color_K, T_color_depth, depth_units_m) -> np.ndarray:
    """The float32[21] parameter block align.cu reads (layout documented there)."""
    dK = np.asarray(depth_K, float)
    cK = np.asarray(color_K, float)
    T = np.asarray(T_color_depth, float)
    return np.array([dK[0, 0], dK[1, 1], dK[0, 2], dK[1, 2],
                     cK[0, 0], cK[1, 1], cK[0, 2], cK[1, 2],
                     *T[:3, :3].reshape(-1), *T[:3, 3], depth_units_m], np.float32)


def align_depth_to_color(depth, depth_K, color_K, color_size, T_color_depth, depth_units_m,
                         backend: str = "twin", window=None) -> np.ndarray:
    """Depth registered to the colour grid; with ``window`` (x0, y0, x1, y1) only that part of
    it, shape (y1 - y0, x1 - x0), equal bit for bit to the full frame's result there."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise CalibrationError(f"align: depth must be 2-D uint16, got {depth.dtype} {depth.shape}")
    for name, m, shape in (("depth_K", depth_K, (3, 3)), ("color_K", color_K, (3, 3)),
                           ("T_color_depth", T_color_depth, (4, 4))):
        if np.asarray(m).shape != shape:
            raise CalibrationError(f"align: {name} must be {shape}, got {np.asarray(m).shape}")
    cw, ch = (int(v) for v in color_size)
    try:
        x0, y0, x1, y1 = align_window(window, (cw, ch))
    except ValueError as exc:
        raise CalibrationError(f"align: {exc}") from None
    dh, dw = depth.shape
    rect = uses_pixel_rectangles(depth_K, (dw, dh), color_K, (cw, ch))
    ww, wh = x1 - x0, y1 - y0
    n = ww * wh
    zbuf = Arg(np.empty(n, np.uint32), scratch=True)
    out = Arg(np.empty((wh, ww), np.uint16), out=True)
    flat = ((n + BLOCK - 1) // BLOCK,)
    run_kernels("align", backend, [
        ("align_clear", flat, (BLOCK,), zbuf, n),
        ("align_scatter", ((dw + BLOCK - 1) // BLOCK, dh), (BLOCK,), Arg(depth), dw, dh, dw,
         Arg(align_params(depth_K, color_K, T_color_depth, depth_units_m)), int(rect), zbuf, x0, y0, ww, wh),
        ("align_finish", flat, (BLOCK,), zbuf, out, n),
    ])
    return out.array
