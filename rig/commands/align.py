"""`rig align --recording FILE.db3 --out DIR`: depth aligned to colour, one 16-bit PNG per frame.

DIR/<frame_number>.png (the recording's own numbers: any start, gaps; a second frame that
carries an earlier frame's number is <frame_number>_1.png) holds the recording's depth re-sampled onto the colour image
(calibration.align.align_depth_to_color, the same algorithm as librealsense's
rs.align), in the recording's depth units. ``--compare-librealsense`` also runs
pyrealsense2's own rs.align on the same frames and reports how well they agree;
the command exits 1 when they miss the targets.
"""

from __future__ import annotations

from ._common import add_json, check_output_dir, check_output_file, emit_json, text_to_stderr

NAME = "align"
HELP = "align a recording's depth to its colour stream (DIR/<frame>.png, uint16)"


def add_arguments(p):
    p.add_argument("--recording", required=True, metavar="FILE.db3",
                   help="RealSense recording (.db3; .bag where the installed pyrealsense2 reads it)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for <frame_number>.png")
    p.add_argument("--compare-librealsense", action="store_true",
                   help="also run pyrealsense2's rs.align and report the agreement")
    add_json(p, "the agreement figures")


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
    with text_to_stderr(args):
        return _align(args)


def _align(args) -> int:
    import sys
    from pathlib import Path

    import cv2

    from ...calibration.align import align_depth_to_color
    from ..capture.realsense_io import Recording
    from ..foundation.errors import DeviceError

    check_output_dir(args.out, "--out")
    check_output_file(args.json, "--json")
    rec = Recording(args.recording)
    if any(rec.color_coeffs) or any(rec.depth_coeffs):
        print(f"warning: {args.recording} has non-zero distortion coefficients (colour "
              f"{rec.color_coeffs}, depth {rec.depth_coeffs}); the alignment treats both cameras "
              "as pinhole, like rs.align does for most distortion models", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ours = {}
    n = 0
    names = []
    for frame in rec.frames():
        aligned = align_depth_to_color(frame.depth, rec.depth_K, rec.color_K, rec.color_size,
                                       rec.T_color_depth, rec.depth_units_mm / 1000.0)
        if not cv2.imwrite(str(out / f"{frame.name}.png"), aligned):
            raise DeviceError(f"cannot write {out / f'{frame.name}.png'}")
        if args.compare_librealsense:
            ours[frame.name] = aligned
        names.append(frame.name)
        n += 1
    if n == 0:
        raise DeviceError(f"{args.recording}: no frame with both depth and colour was played back")
    print(f"wrote {n} aligned depth frame(s) ({rec.color_size[0]}x{rec.color_size[1]}, uint16, "
          f"{rec.depth_units_mm:g} mm units) to {out}: {names[0]}.png .. {names[-1]}.png")
    if not args.compare_librealsense:
        return 0
    per_frame = {}
    for frame in rec.frames(librealsense_aligned=True):
        per_frame[frame.name] = agreement(ours[frame.name], frame.depth)
    if not per_frame:
        raise DeviceError(f"{args.recording}: librealsense aligned none of the {n} frame(s) (no frameset held "
                          "both depth and colour)")
    worst_valid = min(f["valid_agreement"] for f in per_frame.values())
    worst_mad = max(f["mean_abs_diff"] for f in per_frame.values())
    summary = {"frames": len(per_frame), "frames_written": n, "worst_valid_agreement": worst_valid,
               "worst_mean_abs_diff": worst_mad,
               "mean_identical": sum(f["identical"] for f in per_frame.values()) / len(per_frame),
               "targets": {"valid_agreement": 0.99, "mean_abs_diff": 1.0},
               "met": bool(worst_valid >= 0.99 and worst_mad <= 1.0), "per_frame": per_frame}
    skipped = "" if len(per_frame) == n else f" (of {n}: librealsense never paired the others' depth and colour)"
    print(f"vs pyrealsense2 rs.align over {len(per_frame)} frame(s){skipped}: valid/invalid agreement >= "
          f"{worst_valid:.4%}, mean |diff| <= {worst_mad:.3f} units, identical pixels "
          f"{summary['mean_identical']:.4%}: {'targets met' if summary['met'] else 'TARGETS MISSED'}")
    emit_json(summary, args.json)
    return 0 if summary["met"] else 1
