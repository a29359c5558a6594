"""`rig align --recording FILE.db3 --out DIR`: depth aligned to colour, one 16-bit PNG per frame.

DIR/<frame_number>.png holds the recording's depth re-sampled onto the colour image
(calibration.align.align_depth_to_color, the same algorithm as librealsense's
rs.align), in the recording's depth units. ``--compare-librealsense`` also runs
pyrealsense2's own rs.align on the same frames and reports how well they agree.
"""

from __future__ import annotations

NAME = "align"
HELP = "align a recording's depth to its colour stream (DIR/<frame>.png, uint16)"


def add_arguments(p):
    p.add_argument("--recording", required=True, metavar="FILE.db3", help="RealSense recording")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <frame_number>.png")
    p.add_argument("--compare-librealsense", action="store_true",
                   help="also run pyrealsense2's rs.align and report the agreement")
    p.add_argument("--json", metavar="FILE", help="write the agreement figures as JSON")


def agreement(ours, theirs) -> dict:
    """Valid/invalid agreement and mean absolute difference where both are valid."""
    import numpy as np

    vo, vt = ours > 0, theirs > 0
    both = vo & vt
    diff = np.abs(ours[both].astype(np.int64) - theirs[both].astype(np.int64))
    return {"valid_agreement": float((vo == vt).mean()), "identical": float((ours == theirs).mean()),
            "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
            "both_valid": int(both.sum())}


def run(args) -> int:
    import sys
    from pathlib import Path

    import cv2

    from ...calibration.align import align_depth_to_color
    from ...calibration.pipeline import write_json
    from ..capture.realsense_io import Recording
    from ..foundation.errors import DeviceError

    rec = Recording(args.recording)
    if any(rec.color_coeffs) or any(rec.depth_coeffs):
        print(f"warning: {args.recording} has non-zero distortion coefficients (colour "
              f"{rec.color_coeffs}, depth {rec.depth_coeffs}); the alignment treats both cameras "
              "as pinhole, like rs.align does for most distortion models", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ours = {}
    n = 0
    for frame in rec.frames():
        aligned = align_depth_to_color(frame.depth, rec.depth_K, rec.color_K, rec.color_size,
                                       rec.T_color_depth, rec.depth_units_mm / 1000.0)
        if not cv2.imwrite(str(out / f"{frame.index}.png"), aligned):
            raise DeviceError(f"cannot write {out / f'{frame.index}.png'}")
        if args.compare_librealsense:
            ours[frame.index] = aligned
        n += 1
    print(f"wrote {n} aligned depth frame(s) ({rec.color_size[0]}x{rec.color_size[1]}, uint16, "
          f"{rec.depth_units_mm:g} mm units) to {out}")
    if not args.compare_librealsense:
        return 0
    per_frame = {}
    for frame in rec.frames(librealsense_aligned=True):
        per_frame[frame.index] = agreement(ours[frame.index], frame.depth)
    worst_valid = min(f["valid_agreement"] for f in per_frame.values())
    worst_mad = max(f["mean_abs_diff"] for f in per_frame.values())
    summary = {"frames": len(per_frame), "worst_valid_agreement": worst_valid,
               "worst_mean_abs_diff": worst_mad,
               "mean_identical": sum(f["identical"] for f in per_frame.values()) / len(per_frame),
               "targets": {"valid_agreement": 0.99, "mean_abs_diff": 1.0},
               "met": bool(worst_valid >= 0.99 and worst_mad <= 1.0), "per_frame": per_frame}
    print(f"vs pyrealsense2 rs.align over {len(per_frame)} frame(s): valid/invalid agreement >= "
          f"{worst_valid:.4%}, mean |diff| <= {worst_mad:.3f} units, identical pixels "
          f"{summary['mean_identical']:.4%}: {'targets met' if summary['met'] else 'TARGETS MISSED'}")
    if args.json:
        write_json(summary, args.json)
    return 0 if summary["met"] else 2
