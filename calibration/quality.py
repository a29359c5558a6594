"""Figures and verdicts a technician can act on: per camera an ok/warn/fail verdict,
each reason naming the camera, what is wrong and the fix."""

from __future__ import annotations

import numpy as np

from .detect import CameraCaptures
from .solve import Extrinsics, Intrinsics

RMS_WARN, RMS_FAIL = 0.5, 1.0  # px
CONSISTENCY_WARN, CONSISTENCY_FAIL = 2.0, 5.0  # mm
GOOD_VIEWS = 10
GRID = (8, 6)  # coverage cells across x, y


def coverage(views, size) -> dict:
    w, h = size
    pts = np.concatenate([v.corners for v in views]) if views else np.zeros((0, 2))
    gx, gy = GRID
    cells = np.zeros((gy, gx), int)
    if len(pts):
        cx = np.clip((pts[:, 0] / w * gx).astype(int), 0, gx - 1)
        cy = np.clip((pts[:, 1] / h * gy).astype(int), 0, gy - 1)
        np.add.at(cells, (cy, cx), 1)
        x0, x1 = float(pts[:, 0].min() / w), float(pts[:, 0].max() / w)
        y0, y1 = float(pts[:, 1].min() / h), float(pts[:, 1].max() / h)
    else:
        x0 = x1 = y0 = y1 = 0.0
    return {"fraction": float((cells > 0).mean()), "cells": cells.tolist(),
            "extent": {"x": [x0, x1], "y": [y0, y1]}}


_REGIONS = [["top-left corner", "top edge", "top-right corner"],
            ["left edge", "centre", "right edge"],
            ["bottom-left corner", "bottom edge", "bottom-right corner"]]


def _empty_regions(cells: np.ndarray) -> list[str]:
    gy, gx = cells.shape
    out = []
    for ry in range(3):
        for rx in range(3):
            block = cells[ry * gy // 3:(ry + 1) * gy // 3, rx * gx // 3:(rx + 1) * gx // 3]
            if block.sum() == 0:
                out.append(_REGIONS[ry][rx])
    return out


def _tilts_deg(intr: Intrinsics) -> list[float]:
    # Angle between the board's normal and the camera's optical axis, per view.
    return [float(np.degrees(np.arccos(np.clip(abs(T[2, 2]), 0, 1)))) for T in intr.poses.values()]


def camera_verdict(name: str, cc: CameraCaptures, intr: Intrinsics, ext: Extrinsics | None,
                   consistency: dict[str, dict], shared: dict[str, list[str]]) -> dict:
    reasons: list[tuple[str, str, str]] = []  # (level, problem, fix)
    cov = coverage(intr.views, intr.size)
    rms = intr.rms
    joint = ext.joint_rms[name] if ext else rms
    view_errors = ext.joint_view_errors[name] if ext else intr.view_errors
    worst = sorted(view_errors.items(), key=lambda kv: -kv[1])[:3]
    worst_txt = ", ".join(f"{m} ({e:.2f} px)" for m, e in worst)
    for value, label in ((rms, "reprojection RMS"), (joint, "reprojection RMS in the joint solution")):
        if value > RMS_WARN:
            reasons.append(("fail" if value > RMS_FAIL else "warn",
                            f"{label} is {value:.2f} px (good: below {RMS_WARN} px)",
                            ("the board moved, bent or was out of focus: hold it still and flat, check "
                            f"focus and light, and retake the worst views: {worst_txt}")))
            break
    x0, x1 = cov["extent"]["x"]
    y0, y1 = cov["extent"]["y"]
    half = None
    if x1 < 0.55:
        half = ("the left half", "the right half")
    elif x0 > 0.45:
        half = ("the right half", "the left half")
    elif y1 < 0.55:
        half = ("the top half", "the bottom half")
    elif y0 > 0.45:
        half = ("the bottom half", "the top half")
    empty = _empty_regions(np.array(cov["cells"]))
    if half:
        reasons.append(("fail", f"corners cover only {half[0]} of the image",
                        f"add views with the board in {half[1]}"))
    elif cov["fraction"] < 0.6 or empty:
        where = ", ".join(empty) if empty else "the image's edges and corners"
        reasons.append(("warn", f"corners cover {cov['fraction']:.0%} of the image "
                                f"(nothing near: {where})" if empty else
                        f"corners cover {cov['fraction']:.0%} of the image",
                        (f"add views with the board near the {where}: the lens distortion is "
                        "only measured where the board has been")))
    if len(intr.views) < GOOD_VIEWS:
        reasons.append(("warn", f"only {len(intr.views)} usable views",
                        f"capture {GOOD_VIEWS - len(intr.views)} or more further views (15-30 is good)"))
    tilts = _tilts_deg(intr)
    if tilts and max(tilts) < 15:
        reasons.append(("warn", (f"every view is nearly face-on (largest tilt {max(tilts):.0f} deg), so "
                                "the focal length is poorly determined"),
                        "add views with the board tilted 20-40 degrees towards the camera's edges"))
    if intr.dropped:
        txt = ", ".join(f"{m} ({e:.1f} px)" for m, e in intr.dropped.items())
        reasons.append(("warn", f"views left out for large errors: {txt}",
                        "check those images for motion blur or a bent board; retake or delete them"))
    for pair, c in consistency.items():
        if name not in pair.split("/"):
            continue
        other = next(p for p in pair.split("/") if p != name)
        if c["median_mm"] > CONSISTENCY_WARN:
            reasons.append(("fail" if c["median_mm"] > CONSISTENCY_FAIL else "warn",
                            (f"{name} and {other} disagree by {c['median_mm']:.1f} mm (median, "
                            f"worst {c['max_mm']:.1f} mm) on where the board is"),
                            ("a camera moved between captures or the board bent: fix the mounts, "
                            f"keep the board rigid and retake the moments both {name} and {other} see")))
    n_shared = sum(len(v) for v in shared.values())
    if ext is not None and len(shared) and n_shared < 3:
        reasons.append(("warn", f"only {n_shared} moment(s) seen together with another camera",
                        f"capture more moments where the board is visible to {name} and a neighbour"))
    level = "ok"
    for lvl, *_ in reasons:
        if lvl == "fail" or (lvl == "warn" and level == "ok"):
            level = lvl
    return {
        "camera": name,
        "verdict": level,
        "reasons": [{"level": lvl, "message": f"{name}: {problem} — {fix}", "problem": problem,
                     "fix": fix} for lvl, problem, fix in reasons],
        "rms_px": rms,
        "joint_rms_px": joint,
        "views": len(intr.views),
        "images": len(cc.images),
        "sparse_views": list(cc.sparse),
        "dropped_views": intr.dropped,
        "view_errors_px": {m: round(e, 4) for m, e in sorted(view_errors.items())},
        "coverage": cov,
        "max_tilt_deg": max(tilts) if tilts else 0.0,
        "shared_moments": {k: len(v) for k, v in shared.items()},
    }
