"""Height above the belt plane from a depth image (for the trigger): kernel + numpy reference.

The plane is given in the depth camera's frame as ``n . X + d = 0`` with ``n`` a
unit normal pointing from the belt towards the camera and ``d`` in metres, so
the height of a point is ``n . X + d`` (positive above the belt). Output:
float32 millimetres, NaN where depth == 0 (no reading).
"""

from __future__ import annotations

import numpy as np

from ..rig.foundation.errors import CalibrationError
from ._run import Arg, run_kernels

BLOCK = 256


def _check(depth, K, plane_n):
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise CalibrationError(f"height map: depth must be 2-D uint16, got {depth.dtype} {depth.shape}")
    K = np.asarray(K, float)
    if K.shape != (3, 3):
        raise CalibrationError(f"height map: K must be 3x3, got {K.shape}")
    n = np.asarray(plane_n, float).reshape(-1)
    if n.shape != (3,) or not np.isclose(np.linalg.norm(n), 1.0, atol=1e-6):
        raise CalibrationError(f"height map: plane normal must be a unit 3-vector, got {n}")
    return depth, K, n


def height_map_reference(depth, depth_units_m: float, K, plane_n, plane_d_m: float) -> np.ndarray:
    """numpy (float64) reference of kernels/height.cu."""
    depth, K, n = _check(depth, K, plane_n)
    h, w = depth.shape
    z = depth.astype(np.float64) * depth_units_m
    x = (np.arange(w) - K[0, 2]) / K[0, 0] * z
    y = (np.arange(h)[:, None] - K[1, 2]) / K[1, 1] * z
    out = ((n[0] * x + n[1] * y + n[2] * z + plane_d_m) * 1000.0).astype(np.float32)
    out[depth == 0] = np.nan
    return out


def height_map(depth, depth_units_m: float, K, plane_n, plane_d_m: float,
               backend: str = "twin") -> np.ndarray:
    """kernels/height.cu on ``backend`` ("twin" or "cuda"); same contract as the reference."""
    depth, K, n = _check(depth, K, plane_n)
    h, w = depth.shape
    src = Arg(depth)
    out = Arg(np.empty((h, w), np.float32), out=True)
    grid = ((w + BLOCK - 1) // BLOCK, h)
    run_kernels("height", backend, [(
        "height_map", grid, (BLOCK,), src, w, h, w, float(depth_units_m),
        float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
        float(n[0]), float(n[1]), float(n[2]), float(plane_d_m), out)])
    return out.array
