"""Synthetic ChArUco captures rendered from known camera models and board poses.

The ground truth for the calibration tests and benchmarks: every camera of a rig
(:mod:`damage_rig.tools.sim.rigs`) gets lens distortion, and a board is placed at a
series of *moments* (poses in the belt frame). Each camera that sees the board at a
moment gets ``DIR/CAMERA/<moment>.png``; ``DIR/board.yaml`` describes the board and
``DIR/truth.yaml`` holds the true calibration (belt frame reference, distortion
included). The moment ``belt`` has the board flat on the belt, centred on the belt
frame's origin, its x axis along travel: pass ``--belt-frame belt``.

Rendering: each output pixel is the mean of 3x3 sub-samples; a sub-sample's ray is
the exact inverse of OpenCV's distortion model (iterated to 1e-10), intersected with
the board plane and looked up (bilinear) in the printed board; then Gaussian blur and
Gaussian noise. Pixel centres are at integer coordinates, as in OpenCV.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ...calibration.board import BoardSpec, board_texture, save_board
from ...calibration.model import Calibration, CameraModel, invert_T, rotation, save_calibration
from .rigs import jetson_3cam_calibration

log = logging.getLogger(__name__)

SUPERSAMPLE = 3
TEXTURE_PX_PER_MM = 3.0
MARGIN_MM = 15.0  # white paper around the printed board

# Plausible wide-angle lens distortion (k1, k2, p1, p2, k3), one per camera.
DISTORTIONS = (
    (-0.110, 0.085, 0.0006, -0.0004, -0.020),
    (-0.095, 0.070, -0.0005, 0.0003, -0.015),
    (-0.120, 0.095, 0.0004, 0.0005, -0.025),
)


def default_board() -> BoardSpec:
    return BoardSpec(squares_x=10, squares_y=7, square_mm=40.0, marker_mm=30.0,
                     dictionary="DICT_5X5_100", legacy_pattern=False)


@dataclass
class RenderSettings:
    blur_sigma: float = 0.7  # px, after sub-sampling
    noise_sigma: float = 2.0  # grey levels
    black: float = 30.0
    white: float = 225.0


def _undistort_normalized(xd: np.ndarray, yd: np.ndarray, dist: np.ndarray):
    """Invert OpenCV's 5-term distortion on normalized coordinates (fixed point)."""
    k1, k2, p1, p2, k3 = (list(np.asarray(dist, float).ravel()) + [0.0] * 5)[:5]
    x, y = xd.copy(), yd.copy()
    for _ in range(100):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        xn = (xd - dx) / radial
        yn = (yd - dy) / radial
        err = max(float(np.abs(xn - x).max(initial=0)), float(np.abs(yn - y).max(initial=0)))
        x, y = xn, yn
        if err < 1e-12:
            break
    return x, y


class _CameraRays:
    """Undistorted normalized ray of every sub-sample of one camera."""

    def __init__(self, cam: CameraModel):
        w, h = cam.size
        s = SUPERSAMPLE
        us = np.arange(w * s) / s - (s - 1) / (2 * s)
        vs = np.arange(h * s) / s - (s - 1) / (2 * s)
        K = cam.K
        xd = (us[None, :] - K[0, 2]) / K[0, 0]
        yd = (vs[:, None] - K[1, 2]) / K[1, 1]
        xd, yd = np.broadcast_to(xd, (h * s, w * s)), np.broadcast_to(yd, (h * s, w * s))
        x, y = _undistort_normalized(xd.astype(np.float64), yd.astype(np.float64), cam.dist)
        self.x = x.astype(np.float64)
        self.y = y.astype(np.float64)
        self.cam = cam


def _board_outline(spec: BoardSpec, n: int = 20) -> np.ndarray:
    W, H = spec.size_m
    m = MARGIN_MM / 1000.0
    t = np.linspace(0, 1, n)
    xs0, xs1, ys0, ys1 = -m, W + m, -m, H + m
    pts = np.concatenate([
        np.stack([xs0 + t * (xs1 - xs0), np.full(n, ys0)], 1),
        np.stack([xs0 + t * (xs1 - xs0), np.full(n, ys1)], 1),
        np.stack([np.full(n, xs0), ys0 + t * (ys1 - ys0)], 1),
        np.stack([np.full(n, xs1), ys0 + t * (ys1 - ys0)], 1),
    ])
    return np.hstack([pts, np.zeros((len(pts), 1))])


def _background(cam: CameraModel, rng: np.random.Generator) -> np.ndarray:
    w, h = cam.size
    low = rng.uniform(55, 105, size=(max(2, h // 60), max(2, w // 60)))
    bg = cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return bg


def render_view(rays: _CameraRays, T_cam_board: np.ndarray, spec: BoardSpec, texture: np.ndarray,
                background: np.ndarray, settings: RenderSettings,
                rng: np.random.Generator) -> np.ndarray | None:
    """One grey image (uint8) of the board at ``T_cam_board``; None when it is out of view."""
    cam = rays.cam
    w, h = cam.size
    s = SUPERSAMPLE
    R, t = T_cam_board[:3, :3], T_cam_board[:3, 3]
    n = R[:, 2]
    if float(n @ t) <= 0:  # the camera sees the back of the board
        return None
    outline = _board_outline(spec)
    pc = outline @ R.T + t
    if np.any(pc[:, 2] <= 0.05):
        return None
    uv, _ = cv2.projectPoints(outline, cv2.Rodrigues(R)[0], t, cam.K, cam.dist)
    uv = uv.reshape(-1, 2)
    x0, y0 = np.floor(uv.min(0)) - 3
    x1, y1 = np.ceil(uv.max(0)) + 3
    x0, y0 = int(max(x0, 0)), int(max(y0, 0))
    x1, y1 = int(min(x1, w - 1)), int(min(y1, h - 1))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None

    sl = (slice(y0 * s, (y1 + 1) * s), slice(x0 * s, (x1 + 1) * s))
    x, y = rays.x[sl], rays.y[sl]
    denom = n[0] * x + n[1] * y + n[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = float(n @ t) / denom
    px, py, pz = sc * x - t[0], sc * y - t[1], sc - t[2]
    bx = R[0, 0] * px + R[1, 0] * py + R[2, 0] * pz
    by = R[0, 1] * px + R[1, 1] * py + R[2, 1] * pz
    ppm = TEXTURE_PX_PER_MM * 1000.0
    mx = ((bx + MARGIN_MM / 1000.0) * ppm - 0.5).astype(np.float32)
    my = ((by + MARGIN_MM / 1000.0) * ppm - 0.5).astype(np.float32)
    bad = ~(sc > 0)
    mx[bad] = -10
    my[bad] = -10
    tex = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ones = np.full(texture.shape, 1.0, np.float32)
    cover = cv2.remap(ones, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    bgss = cv2.resize(background[y0:y1 + 1, x0:x1 + 1], None, fx=s, fy=s,
                      interpolation=cv2.INTER_NEAREST)
    ink = settings.black + (settings.white - settings.black) * tex
    mixed = cover * ink + (1 - cover) * bgss
    patch = cv2.resize(mixed, (x1 - x0 + 1, y1 - y0 + 1), interpolation=cv2.INTER_AREA)
    img = background.copy()
    img[y0:y1 + 1, x0:x1 + 1] = patch
    if settings.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), settings.blur_sigma)
    img = img + rng.normal(0, settings.noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def belt_board_pose(spec: BoardSpec, centre=(0.0, 0.0), yaw_deg: float = 0.0,
                    tilt=(0.0, 0.0), height: float = 0.0) -> np.ndarray:
    """T_belt_board for the board lying face up, its centre at ``centre`` (x, y) and
    ``height`` above the belt, x along travel rotated by ``yaw_deg``, tilted by
    ``tilt`` (about belt x, about belt y; degrees)."""
    W, H = spec.size_m
    R_flat = np.diag([1.0, -1.0, -1.0])  # board x = belt x, board z = down
    R = rotation("z", yaw_deg) @ rotation("x", tilt[0]) @ rotation("y", tilt[1]) @ R_flat
    centre_b = np.array([W / 2, H / 2, 0.0])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.array([centre[0], centre[1], height + spec.thickness_mm / 1000.0]) - R @ centre_b
    return T


def facing_pose(cam: CameraModel, spec: BoardSpec, uv, distance: float, tilt_deg: float,
                tilt_dir_deg: float, roll_deg: float) -> np.ndarray:
    """T_belt_board for a board whose centre sits on the ray of pixel ``uv`` at
    ``distance``, facing the camera, tilted by ``tilt_deg`` about an in-plane axis."""
    K = cam.K
    ray = np.array([(uv[0] - K[0, 2]) / K[0, 0], (uv[1] - K[1, 2]) / K[1, 1], 1.0])
    ray /= np.linalg.norm(ray)
    centre_c = ray * distance
    # Board facing the camera: board z (into the board) along the ray, then tilt.
    z = ray
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R0 = np.stack([x, y, z], 1)
    axis = np.array([np.cos(np.deg2rad(tilt_dir_deg)), np.sin(np.deg2rad(tilt_dir_deg)), 0.0])
    R_tilt = cv2.Rodrigues(axis * np.deg2rad(tilt_deg))[0]
    R = R0 @ R_tilt @ rotation("z", roll_deg)
    W, H = spec.size_m
    T_cam_board = np.eye(4)
    T_cam_board[:3, :3] = R
    T_cam_board[:3, 3] = centre_c - R @ np.array([W / 2, H / 2, 0.0])
    return cam.T_ref_cam @ T_cam_board


def make_moments(calib: Calibration, spec: BoardSpec, n_shared: int, n_per_camera: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Board poses (T_belt_board) by moment name: ``belt``, shared ones near the belt's
    centre (seen by several cameras) and ones that fill each camera's image."""
    moments = {"belt": belt_board_pose(spec)}
    for i in range(n_shared):
        moments[f"shared_{i:03d}"] = belt_board_pose(
            spec, centre=(rng.uniform(-0.12, 0.12), rng.uniform(-0.06, 0.06)),
            yaw_deg=rng.uniform(-30, 30), tilt=(rng.uniform(-25, 25), rng.uniform(-20, 20)),
            height=rng.uniform(0.0, 0.12))
    for name in sorted(calib.cameras):
        cam = calib.cameras[name]
        w, h = cam.size
        grid = [(gx, gy) for gy in (0.2, 0.5, 0.8) for gx in (0.18, 0.5, 0.82)]
        for i in range(n_per_camera):
            gx, gy = grid[i % len(grid)]
            uv = (w * (gx + rng.uniform(-0.06, 0.06)), h * (gy + rng.uniform(-0.06, 0.06)))
            dist = rng.uniform(0.5, 0.85)
            moments[f"{name}_{i:03d}"] = facing_pose(
                cam, spec, uv, distance=dist, tilt_deg=rng.uniform(15, 40),
                tilt_dir_deg=rng.uniform(0, 360), roll_deg=rng.uniform(-25, 25))
    return moments


def distorted(calib: Calibration) -> Calibration:
    """A copy of ``calib`` with a plausible lens distortion on every colour camera."""
    cams = {}
    for i, name in enumerate(sorted(calib.cameras)):
        c = calib.cameras[name]
        cams[name] = CameraModel(name=name, K=c.K.copy(), dist=np.array(DISTORTIONS[i % 3]),
                                 size=c.size, T_ref_cam=c.T_ref_cam.copy(), depth=c.depth)
    return Calibration(cameras=cams, belt={"reference": "belt", "source": "belt"})


def synthesize_captures(out_dir, calib: Calibration | None = None, spec: BoardSpec | None = None,
                        n_shared: int = 14, n_per_camera: int = 14, seed: int = 0,
                        settings: RenderSettings | None = None, progress: bool = True) -> Calibration:
    """Render captures to ``out_dir``; returns the true calibration (also in truth.yaml)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = distorted(calib if calib is not None else jetson_3cam_calibration())
    spec = spec or default_board()
    settings = settings or RenderSettings()
    rng = np.random.default_rng(seed)
    moments = make_moments(truth, spec, n_shared, n_per_camera, rng)
    texture = board_texture(spec, TEXTURE_PX_PER_MM)
    pad = round(MARGIN_MM * TEXTURE_PX_PER_MM)
    texture = cv2.copyMakeBorder(texture, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255)
    texture = (texture.astype(np.float32) / 255.0)
    save_board(spec, out / "board.yaml")
    save_calibration(truth, out / "truth.yaml")

    from tqdm import tqdm

    total = len(truth.cameras) * len(moments)
    bar = tqdm(total=total, desc="rendering", unit="view", disable=not progress)
    written = 0
    for name in sorted(truth.cameras):
        cam = truth.cameras[name]
        rays = _CameraRays(cam)
        bg = _background(cam, rng)
        (out / name).mkdir(exist_ok=True)
        T_cam_belt = invert_T(cam.T_ref_cam)
        for moment, T_belt_board in moments.items():
            img = render_view(rays, T_cam_belt @ T_belt_board, spec, texture, bg, settings, rng)
            bar.update(1)
            if img is None:
                continue
            cv2.imwrite(str(out / name / f"{moment}.png"), img)
            written += 1
    bar.close()
    (out / "moments.yaml").write_text(
        "# true board poses, T_belt_board (4x4, metres) by moment\n" + "".join(
            f"{k}: {np.round(v, 9).tolist()}\n" for k, v in moments.items()))
    log.info("rendered %d views of %d moments to %s", written, len(moments), out)
    return truth
