"""Intrinsics per camera, extrinsics of all cameras jointly, and the belt frame.

* Intrinsics: ``cv2.calibrateCamera`` on the ChArUco corners of each camera (K, 5
  distortion terms); views whose error is far above the rest are dropped once and
  reported.
* Extrinsics: one bundle adjustment over *every* view of every camera: unknowns are
  each camera's pose in the reference frame (the first camera, by name, is the
  reference during the solve) and the board's pose at each moment; residuals are the
  reprojection errors of all corners through each camera's calibrated model. A
  spanning tree of per-moment relative poses only seeds it; the solve refines every
  camera together (Levenberg-Marquardt, Huber-weighted).
* Belt frame: from the board's pose at the ``--belt-frame`` moment — x along the
  board's x (travel), z up from the belt, origin at the board's centre on the belt
  surface (the board's thickness below its face).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..rig.foundation.errors import CalibrationError
from .board import BoardSpec
from .detect import CameraCaptures, View
from .model import invert_T

log = logging.getLogger(__name__)


def rt_to_T(rvec, tvec) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, float).reshape(3))[0]
    T[:3, 3] = np.asarray(tvec, float).reshape(3)
    return T


def T_to_rt(T: np.ndarray):
    return cv2.Rodrigues(T[:3, :3])[0].ravel(), T[:3, 3].copy()


def rotation_deg(R: np.ndarray) -> float:
    c = (np.trace(R) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def project(view: View, K, dist, T_cam_board) -> np.ndarray:
    r, t = T_to_rt(T_cam_board)
    uv, _ = cv2.projectPoints(view.obj, r, t, K, dist)
    return uv.reshape(-1, 2)


@dataclass
class Intrinsics:
    name: str
    K: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    rms: float
    views: list[View]
    view_errors: dict[str, float]  # moment -> RMS px
    poses: dict[str, np.ndarray]  # moment -> T_cam_board from this camera alone
    dropped: dict[str, float] = field(default_factory=dict)  # moment -> RMS px when dropped


def calibrate_intrinsics(cc: CameraCaptures) -> Intrinsics:
    views = list(cc.views)
    dropped: dict[str, float] = {}
    for attempt in range(2):
        obj = [v.obj.astype(np.float32) for v in views]
        img = [v.corners.astype(np.float32).reshape(-1, 1, 2) for v in views]
        crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
        try:
            rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, cc.size, None, None,
                                                             criteria=crit)
        except cv2.error as exc:
            raise CalibrationError(
                f"camera {cc.name!r}: intrinsic calibration failed ({exc.err}) — add views with "
                "the board tilted and in different parts of the image") from None
        errs = {}
        for v, r, t in zip(views, rvecs, tvecs):
            uv, _ = cv2.projectPoints(v.obj, r, t, K, dist)
            errs[v.moment] = float(np.sqrt(np.mean(np.sum((uv.reshape(-1, 2) - v.corners) ** 2, 1))))
        med = float(np.median(list(errs.values())))
        bad = [m for m, e in errs.items() if e > max(1.0, 5 * med)]
        if attempt == 0 and bad and len(views) - len(bad) >= 4:
            dropped.update({m: errs[m] for m in bad})
            views = [v for v in views if v.moment not in bad]
            continue
        break
    poses = {v.moment: rt_to_T(r, t) for v, r, t in zip(views, rvecs, tvecs)}
    return Intrinsics(cc.name, K, dist.ravel()[:5] if dist.size >= 5 else dist.ravel(), cc.size,
                      float(rms), views, errs, poses, dropped)


# ---------------------------------------------------------------------------------------------
# Joint extrinsics


def _average_T(Ts: list[np.ndarray]) -> np.ndarray:
    """Chordal mean of rotations and mean of translations."""
    M = sum(T[:3, :3] for T in Ts)
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1, 1, np.linalg.det(U @ Vt)]) @ Vt
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = np.median([T[:3, 3] for T in Ts], axis=0)
    return out


def _exp_update(T: np.ndarray, d: np.ndarray) -> np.ndarray:
    """T @ exp(d), d = (rotation vector, translation) in T's own frame."""
    out = T.copy()
    out[:3, :3] = T[:3, :3] @ cv2.Rodrigues(d[:3].reshape(3, 1))[0]
    out[:3, 3] = T[:3, 3] + T[:3, :3] @ d[3:]
    return out


@dataclass
class Extrinsics:
    reference: str
    T_ref_cam: dict[str, np.ndarray]
    T_ref_board: dict[str, np.ndarray]  # moment -> board pose
    joint_rms: dict[str, float]  # camera -> reprojection RMS in the joint solution
    joint_view_errors: dict[str, dict[str, float]]
    iterations: int


def _seed_poses(intr: dict[str, Intrinsics], names: list[str], reference: str) -> dict[str, np.ndarray]:
    """Seed: breadth-first over cameras from the reference, each edge the mean of the
    relative poses over the moments both cameras saw."""
    T_ref_cam = {reference: np.eye(4)}
    frontier = [reference]
    while frontier:
        a = frontier.pop(0)
        for b in names:
            if b in T_ref_cam:
                continue
            shared = sorted(set(intr[a].poses) & set(intr[b].poses))
            if not shared:
                continue
            rel = [intr[a].poses[m] @ invert_T(intr[b].poses[m]) for m in shared]  # T_a_b
            T_ref_cam[b] = T_ref_cam[a] @ _average_T(rel)
            frontier.append(b)
    missing = [n for n in names if n not in T_ref_cam]
    if missing:
        raise CalibrationError(f"camera {missing[0]!r} shares no moment with the others")
    return T_ref_cam


def _rms_per_camera(names: list[str], views: list, res: list) -> tuple[dict, dict]:
    """Reprojection RMS (px) per camera, and per camera and moment."""
    joint_rms, joint_views = {}, {}
    for n in names:
        sq, cnt = 0.0, 0
        joint_views[n] = {}
        for (v, _), rv in zip(views, res):
            if v.camera == n:
                e = rv.reshape(-1, 2)
                joint_views[n][v.moment] = float(np.sqrt(np.mean(np.sum(e * e, 1))))
                sq += float(np.sum(e * e))
                cnt += len(e)
        joint_rms[n] = float(np.sqrt(sq / max(cnt, 1)))
    return joint_rms, joint_views


def solve_extrinsics(intr: dict[str, Intrinsics], reference: str,
                     huber_px: float = 1.5, max_iter: int = 50) -> Extrinsics:
    names = sorted(intr)
    views = [(v, intr[v.camera]) for n in names for v in intr[n].views]
    T_ref_cam = _seed_poses(intr, names, reference)
    T_ref_board: dict[str, np.ndarray] = {}
    best_n: dict[str, int] = {}
    for v, it in views:
        if v.n > best_n.get(v.moment, 0):
            best_n[v.moment] = v.n
            T_ref_board[v.moment] = T_ref_cam[v.camera] @ it.poses[v.moment]

    cams = [n for n in names if n != reference]
    moments = sorted(T_ref_board)
    cidx = {n: i for i, n in enumerate(cams)}
    midx = {m: len(cams) + i for i, m in enumerate(moments)}
    P = 6 * (len(cams) + len(moments))
    T_cam_ref = {n: invert_T(T_ref_cam[n]) for n in names}
    rows = sum(2 * v.n for v, _ in views)

    def residuals(T_cam_ref, T_ref_board):
        out = []
        for v, it in views:
            uv = project(v, it.K, it.dist, T_cam_ref[v.camera] @ T_ref_board[v.moment])
            out.append((uv - v.corners).ravel())
        return out

    eps = 1e-6
    lam = 1e-3
    res = residuals(T_cam_ref, T_ref_board)
    r = np.concatenate(res)

    def cost(rv):
        a = np.abs(rv)
        return float(np.sum(np.where(a <= huber_px, 0.5 * a * a, huber_px * (a - 0.5 * huber_px))))

    c0 = cost(r)
    it_count = 0
    for it_count in range(1, max_iter + 1):
        J = np.zeros((rows, P))
        row = 0
        for (v, intr_v), rv in zip(views, res):
            n2 = 2 * v.n
            Tb = T_ref_board[v.moment]
            Tc = T_cam_ref[v.camera]
            blocks = []
            if v.camera != reference:
                blocks.append((6 * cidx[v.camera], "cam"))
            blocks.append((6 * midx[v.moment], "board"))
            for col0, kind in blocks:
                for k in range(6):
                    d = np.zeros(6)
                    d[k] = eps
                    if kind == "cam":
                        T = _exp_update(Tc, d) @ Tb
                    else:
                        T = Tc @ _exp_update(Tb, d)
                    uv = project(v, intr_v.K, intr_v.dist, T)
                    J[row:row + n2, col0 + k] = ((uv - v.corners).ravel() - rv) / eps
            row += n2
        a = np.abs(r)
        w = np.where(a <= huber_px, 1.0, huber_px / np.maximum(a, 1e-12))
        Jw = J * w[:, None]
        H = J.T @ Jw
        g = Jw.T @ r
        improved = False
        for _ in range(10):
            A = H + lam * np.diag(np.diag(H) + 1e-9)
            try:
                step = -np.linalg.solve(A, g)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            new_cam = {n: (_exp_update(T_cam_ref[n], step[6 * cidx[n]:6 * cidx[n] + 6])
                           if n in cidx else T_cam_ref[n]) for n in names}
            new_board = {m: _exp_update(T_ref_board[m], step[6 * midx[m]:6 * midx[m] + 6])
                         for m in moments}
            new_res = residuals(new_cam, new_board)
            new_r = np.concatenate(new_res)
            c1 = cost(new_r)
            if c1 < c0:
                T_cam_ref, T_ref_board, res, r = new_cam, new_board, new_res, new_r
                lam = max(lam / 10, 1e-9)
                improved = (c0 - c1) > 1e-10 * max(c0, 1e-12) and np.abs(step).max() > 1e-10
                c0 = c1
                break
            lam *= 10
        if not improved:
            break

    joint_rms, joint_views = _rms_per_camera(names, views, res)
    log.info("joint extrinsics: %d cameras, %d moments, %d iterations", len(names), len(moments), it_count)
    return Extrinsics(reference, {n: invert_T(T_cam_ref[n]) for n in names}, T_ref_board,
                      joint_rms, joint_views, it_count)


# ---------------------------------------------------------------------------------------------
# Belt frame and consistency


def T_belt_board_flat(spec: BoardSpec) -> np.ndarray:
    """Board pose in the belt frame when it lies face up with its centre on the origin."""
    W, H = spec.size_m
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = [-W / 2, H / 2, spec.thickness_mm / 1000.0]
    return T


def belt_from_moment(ext: Extrinsics, spec: BoardSpec, moment: str) -> np.ndarray:
    """T_ref_belt from the board's pose at ``moment``."""
    if moment not in ext.T_ref_board:
        raise CalibrationError(
            f"--belt-frame {moment!r}: no camera detected the board in a file named {moment!r} — "
            f"name a moment whose images show the board flat on the belt (have: "
            f"{', '.join(sorted(ext.T_ref_board)[:12])}{', ...' if len(ext.T_ref_board) > 12 else ''})")
    return ext.T_ref_board[moment] @ invert_T(T_belt_board_flat(spec))


def consistency_mm(intr: dict[str, Intrinsics], ext: Extrinsics, T_frame_ref: np.ndarray,
                   on_plane: bool) -> dict[str, dict]:
    """How far apart two cameras put the same board corner, each from its own view of a
    shared moment mapped through the solved extrinsics; millimetres, in the belt plane
    (x, y of the belt frame) when ``on_plane``, else in 3-D. Per pair of cameras."""
    out: dict[str, dict] = {}
    names = sorted(intr)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(intr[a].poses) & set(intr[b].poses))
            if not shared:
                continue
            dists = []
            for m in shared:
                va = next(v for v in intr[a].views if v.moment == m)
                pts = va.obj
                Xa = (T_frame_ref @ ext.T_ref_cam[a] @ intr[a].poses[m])
                Xb = (T_frame_ref @ ext.T_ref_cam[b] @ intr[b].poses[m])
                pa = pts @ Xa[:3, :3].T + Xa[:3, 3]
                pb = pts @ Xb[:3, :3].T + Xb[:3, 3]
                diff = (pa - pb)[:, :2] if on_plane else (pa - pb)
                dists.append(float(np.median(np.linalg.norm(diff, axis=1)) * 1000.0))
            out[f"{a}/{b}"] = {"moments": len(shared), "median_mm": float(np.median(dists)),
                               "max_mm": float(np.max(dists))}
    return out
