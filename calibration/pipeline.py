"""`rig calibrate` from captures to a calibration file and a report.

:func:`run_calibration` detects, solves, judges and returns everything the report
shows; :func:`compare_with_truth` measures a result against the true calibration of
synthetic captures (the benchmark targets of docs/calibration.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..rig.foundation.errors import CalibrationError
from .board import BoardSpec, load_board
from .detect import CameraCaptures, camera_graph, check_connected, check_views, detect_all
from .model import Calibration, CameraModel, invert_T, load_calibration, save_calibration
from .quality import camera_verdict
from .solve import (
    Extrinsics,
    Intrinsics,
    belt_from_moment,
    calibrate_intrinsics,
    consistency_mm,
    rotation_deg,
    solve_extrinsics,
)

log = logging.getLogger(__name__)

TARGETS = {"focal_pct": 0.3, "principal_point_px": 1.0, "rms_px": 0.3,
           "relative_translation_mm": 2.0, "relative_rotation_deg": 0.1}


@dataclass
class CalibrationRun:
    spec: BoardSpec
    calibration: Calibration
    detections: dict[str, CameraCaptures]
    intrinsics: dict[str, Intrinsics]
    extrinsics: Extrinsics | None
    T_frame_ref: np.ndarray  # reference-of-solve -> output frame
    figures: dict


def run_calibration(captures, board, belt_frame: str | None = None,
                    cameras: list[str] | None = None, progress: bool = True) -> CalibrationRun:
    spec = board if isinstance(board, BoardSpec) else load_board(board)
    captures = Path(captures)
    dets = detect_all(captures, spec, cameras, progress=progress)
    check_views(dets)
    names = sorted(dets)
    reference = names[0]
    check_connected(dets, reference)
    intr = {n: calibrate_intrinsics(dets[n]) for n in names}
    ext = solve_extrinsics(intr, reference) if len(names) > 1 else None
    if ext is None:  # one camera: still a board pose per moment for the belt frame
        ext = Extrinsics(reference, {reference: np.eye(4)},
                         {m: T for m, T in intr[reference].poses.items()},
                         {reference: intr[reference].rms}, {reference: intr[reference].view_errors}, 0)
    belt = None
    T_frame_ref = np.eye(4)
    if belt_frame:
        moment = Path(belt_frame).stem
        T_ref_belt = belt_from_moment(ext, spec, moment)
        T_frame_ref = invert_T(T_ref_belt)
        belt = {"reference": "belt", "source": moment,
                "origin": "centre of the board on the belt surface at that moment",
                "board": spec.describe()}
    cams = {n: CameraModel(name=n, K=intr[n].K, dist=np.asarray(intr[n].dist, float),
                           size=tuple(int(s) for s in intr[n].size),
                           T_ref_cam=T_frame_ref @ ext.T_ref_cam[n]) for n in names}
    calib = Calibration(cameras=cams, belt=belt)
    consistency = consistency_mm(intr, ext, T_frame_ref, on_plane=belt is not None) if len(names) > 1 else {}
    graph = camera_graph(dets)
    verdicts = {n: camera_verdict(n, dets[n], intr[n], ext if len(names) > 1 else None, consistency,
                                  {b: m for b, m in graph[n].items() if m}) for n in names}
    figures = {
        "captures": str(captures),
        "board": spec.to_dict(),
        "reference": "belt" if belt else reference,
        "belt_frame": belt["source"] if belt else None,
        "cameras": {n: {"K": intr[n].K.tolist(), "dist": np.asarray(intr[n].dist).tolist(),
                        "size": list(intr[n].size), "T_ref_cam": cams[n].T_ref_cam.tolist(),
                        **verdicts[n]} for n in names},
        "consistency_mm": consistency,
        "consistency_frame": "belt plane (x, y)" if belt else f"3-D, frame of {reference}",
        "moments": sorted(ext.T_ref_board),
        "joint_iterations": ext.iterations,
        "verdict": _overall(verdicts),
    }
    return CalibrationRun(spec, calib, dets, intr, ext if len(names) > 1 else None, T_frame_ref, figures)


def _overall(verdicts: dict[str, dict]) -> str:
    levels = {v["verdict"] for v in verdicts.values()}
    return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"


def write_calibration(calib: Calibration, out) -> None:
    """Save, keeping the depth models of an existing file at ``out`` (from --from-device)."""
    out = Path(out)
    if out.is_file():
        try:
            old = load_calibration(out)
        except CalibrationError:
            old = None
        if old is not None:
            for name, cam in calib.cameras.items():
                if cam.depth is None and name in old.cameras and old.cameras[name].depth is not None:
                    cam.depth = old.cameras[name].depth
    out.parent.mkdir(parents=True, exist_ok=True)
    save_calibration(calib, out)


def compare_with_truth(calib: Calibration, truth: Calibration) -> dict:
    """Errors of ``calib`` against ``truth`` and whether each target is met."""
    per_cam, pairs = {}, {}
    for n, c in calib.cameras.items():
        if n not in truth.cameras:
            raise CalibrationError(f"--truth has no camera {n!r} (has {sorted(truth.cameras)})")
        t = truth.cameras[n]
        per_cam[n] = {
            "focal_pct": [float(100 * (c.K[0, 0] / t.K[0, 0] - 1)), float(100 * (c.K[1, 1] / t.K[1, 1] - 1))],
            "principal_point_px": [float(c.K[0, 2] - t.K[0, 2]), float(c.K[1, 2] - t.K[1, 2])],
        }
        if calib.belt is not None and truth.belt is not None:
            d = invert_T(t.T_ref_cam) @ c.T_ref_cam
            per_cam[n]["belt_pose_translation_mm"] = float(np.linalg.norm(d[:3, 3]) * 1000)
            per_cam[n]["belt_pose_rotation_deg"] = rotation_deg(d[:3, :3])
    names = sorted(calib.cameras)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            est = invert_T(calib.cameras[a].T_ref_cam) @ calib.cameras[b].T_ref_cam
            tru = invert_T(truth.cameras[a].T_ref_cam) @ truth.cameras[b].T_ref_cam
            pairs[f"{a}/{b}"] = {
                "translation_mm": float(np.linalg.norm(est[:3, 3] - tru[:3, 3]) * 1000),
                "rotation_deg": rotation_deg(est[:3, :3].T @ tru[:3, :3]),
            }
    worst = {
        "focal_pct": max(abs(v) for c in per_cam.values() for v in c["focal_pct"]),
        "principal_point_px": max(abs(v) for c in per_cam.values() for v in c["principal_point_px"]),
        "relative_translation_mm": max((p["translation_mm"] for p in pairs.values()), default=0.0),
        "relative_rotation_deg": max((p["rotation_deg"] for p in pairs.values()), default=0.0),
    }
    return {"cameras": per_cam, "pairs": pairs, "worst": worst}


def truth_summary(run: CalibrationRun, truth: Calibration) -> dict:
    cmp = compare_with_truth(run.calibration, truth)
    cmp["worst"]["rms_px"] = max(c["rms_px"] for c in run.figures["cameras"].values())
    cmp["targets"] = TARGETS
    cmp["met"] = {k: bool(cmp["worst"][k] <= TARGETS[k]) for k in TARGETS}
    return cmp


def write_json(figures: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=_jsonable))


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
