"""The belt plane from depth: a robust fit for the runtime's trigger, and a check
against the belt frame that the board calibration found.

A plane is ``(normal, d)`` with ``normal`` a unit 3-vector and points ``p`` on it
satisfying ``normal @ p + d == 0``; :func:`height_above_plane` is then the signed
distance ``normal @ p + d``. :func:`fit_belt_plane` orients the normal towards
``toward`` (default: the origin, i.e. the camera when points are in a camera frame),
so heights of items on the belt are positive.
"""

from __future__ import annotations

import numpy as np

from ..rig.foundation.errors import CalibrationError


def _check_points(points: np.ndarray, where: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise CalibrationError(f"{where}: expected points of shape (N, 3), got {pts.shape} {pts.dtype}")
    return pts[np.all(np.isfinite(pts), axis=1)]


def depth_to_points(depth: np.ndarray, K: np.ndarray, depth_units_m: float,
                    stride: int = 4) -> np.ndarray:
    """Points (N, 3) in metres in the depth camera's frame from every ``stride``-th pixel
    with a reading (pinhole, pixel centres at integer coordinates)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise CalibrationError(f"depth_to_points: expected a 2-D depth image, got shape {depth.shape}")
    v, u = np.mgrid[0:depth.shape[0]:stride, 0:depth.shape[1]:stride]
    z = depth[::stride, ::stride].astype(np.float64) * depth_units_m
    ok = z > 0
    u, v, z = u[ok], v[ok], z[ok]
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], axis=1)


def _plane_from_3(p: np.ndarray):
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    norm = np.linalg.norm(n, axis=1)
    return n, norm


def _refine(pts: np.ndarray):
    c = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    n = vt[2]
    return n, -float(n @ c)


def fit_belt_plane(points_xyz: np.ndarray, threshold_m: float = 0.004, iterations: int = 300,
                   toward=(0.0, 0.0, 0.0), seed: int | None = 0,
                   min_inlier_fraction: float = 0.2) -> tuple[np.ndarray, float]:
    """Robust plane (normal (3,), d) through the dominant plane of ``points_xyz`` (metres).

    RANSAC over ``iterations`` random triples (the plane with the most points within
    ``threshold_m``), then a least-squares refit on those inliers, twice. Items on the
    belt are outliers. Raises CalibrationError when fewer than ``min_inlier_fraction``
    of the points lie on the best plane (no belt in view).
    """
    pts = _check_points(points_xyz, "fit_belt_plane")
    if len(pts) < 3:
        raise CalibrationError(f"fit_belt_plane: need at least 3 points, got {len(pts)}")
    rng = np.random.default_rng(seed)
    sample = pts if len(pts) <= 20000 else pts[rng.choice(len(pts), 20000, replace=False)]
    idx = rng.integers(0, len(sample), size=(iterations, 3))
    tri = sample[idx]  # (I, 3, 3)
    n, norm = _plane_from_3(tri)
    good = norm > 1e-12
    n = n[good] / norm[good, None]
    d = -np.einsum("ij,ij->i", n, tri[good, 0])
    if len(n) == 0:
        raise CalibrationError("fit_belt_plane: the points are degenerate (all on a line)")
    counts = np.zeros(len(n), int)
    for i in range(0, len(n), 64):  # chunked: (64, M) distances at a time
        dist = np.abs(sample @ n[i:i + 64].T + d[i:i + 64])
        counts[i:i + 64] = (dist < threshold_m).sum(axis=0)
    best = int(np.argmax(counts))
    normal, off = n[best], float(d[best])
    for _ in range(2):
        inl = np.abs(pts @ normal + off) < threshold_m
        if inl.sum() < 3:
            break
        normal, off = _refine(pts[inl])
    frac = float((np.abs(pts @ normal + off) < threshold_m).mean())
    if frac < min_inlier_fraction:
        raise CalibrationError(
            f"fit_belt_plane: only {frac:.0%} of the points lie on one plane (within "
            f"{threshold_m * 1000:.1f} mm) — is the belt in view and empty?")
    if normal @ np.asarray(toward, float) + off < 0:
        normal, off = -normal, -off
    return normal, off


def height_above_plane(points_xyz: np.ndarray, normal: np.ndarray, d: float) -> np.ndarray:
    """Signed distance (metres) of each point from the plane, positive on the normal's side."""
    pts = _check_points(points_xyz, "height_above_plane") if np.ndim(points_xyz) == 2 else \
        np.asarray(points_xyz, float)
    return pts @ np.asarray(normal, float) + float(d)


def height_map(depth: np.ndarray, K: np.ndarray, depth_units_m: float, normal: np.ndarray,
               d: float) -> np.ndarray:
    """Height above the plane (metres, float32) of every depth pixel; NaN where depth is 0."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    z = depth.astype(np.float64) * depth_units_m
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    out = normal[0] * x + normal[1] * y + normal[2] * z + d
    out[depth == 0] = np.nan
    return out.astype(np.float32)


def transform_plane(normal: np.ndarray, d: float, T_dst_src: np.ndarray) -> tuple[np.ndarray, float]:
    """The plane expressed in another frame (``T_dst_src`` maps src points to dst)."""
    R, t = T_dst_src[:3, :3], T_dst_src[:3, 3]
    n2 = R @ np.asarray(normal, float)
    return n2, float(d - n2 @ t)


def compare_with_belt_frame(normal_cam: np.ndarray, d_cam: float, T_belt_cam: np.ndarray) -> dict:
    """How the fitted plane (in a camera frame) differs from the belt frame's z = 0 plane:
    the tilt between the normals (degrees) and the plane's height at the belt origin
    and at the point under the camera (millimetres)."""
    n, d = transform_plane(normal_cam, d_cam, T_belt_cam)
    if n[2] < 0:
        n, d = -n, -d
    tilt = float(np.degrees(np.arccos(np.clip(n[2], -1, 1))))
    # Height of the fitted plane above z = 0 at (x, y): solve n.(x, y, z) + d = 0 for z.
    def z_at(x, y):
        return float(-(n[0] * x + n[1] * y + d) / n[2]) if abs(n[2]) > 1e-9 else float("nan")
    cx, cy = T_belt_cam[0, 3], T_belt_cam[1, 3]
    return {"tilt_deg": tilt, "offset_at_origin_mm": z_at(0.0, 0.0) * 1000.0,
            "offset_below_camera_mm": z_at(cx, cy) * 1000.0}
