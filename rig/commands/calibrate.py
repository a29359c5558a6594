"""`rig calibrate`: board calibration from captures, factory calibration from cameras,
synthetic captures with known truth, and the belt-plane check.

    rig calibrate --captures DIR --board BOARD.yaml --out CALIB.yaml
                  [--report DIR] [--json REPORT.json] [--belt-frame NAME] [--truth TRUTH.yaml]
    rig calibrate --from-device [--recording [NAME=]FILE.db3 ...] [--serial NAME=SERIAL ...]
                  [--calib CALIB.yaml] [--out CALIB.yaml] [--json FILE]
    rig calibrate --synthesize DIR [--rig jetson_3cam|demo] [--shared N] [--per-camera N] [--seed S]
    rig calibrate --belt-check --recording NAME=FILE.db3 --calib CALIB.yaml [--json FILE]
    rig calibrate board [--board BOARD.yaml] --out BOARD.pdf|BOARD.png [--dpi DPI]
"""

from __future__ import annotations

from ._common import (
    add_json,
    check_output_dir,
    check_output_file,
    emit_json,
    progress,
    text_to_stderr,
)

NAME = "calibrate"
HELP = "calibrate the cameras from ChArUco captures (or read factory calibration, or synthesize)"


def add_arguments(p):
    p.add_argument("action", nargs="?", choices=["board"],
                   help="board: render the board (--board, default the documented 10x7 40 mm board) to "
                        "--out FILE.pdf|png at true scale with a ruler, to print")
    p.add_argument("--dpi", type=float, default=300.0, help="board: page resolution (default 300)")
    mode = p.add_argument_group("mode (one of)")
    mode.add_argument("--captures", metavar="DIR",
                      help="DIR/CAMERA_NAME/*.png; the same file name across folders = the same moment")
    mode.add_argument("--from-device", action="store_true",
                      help="read factory intrinsics and depth-to-colour extrinsics from connected "
                           "cameras or --recording files and compare them with --calib")
    mode.add_argument("--synthesize", metavar="DIR",
                      help="render synthetic captures with known truth to DIR (board.yaml, truth.yaml)")
    mode.add_argument("--belt-check", action="store_true",
                      help="fit the belt plane in a recording's depth and compare it with --calib's belt frame")
    p.add_argument("--board", metavar="BOARD.yaml", help="ChArUco board description")
    p.add_argument("--out", metavar="CALIB.yaml", help="calibration file to write")
    p.add_argument("--report", metavar="DIR", help="write the PNG/HTML report to DIR")
    add_json(p, "the figures")
    p.add_argument("--belt-frame", metavar="NAME",
                   help="the moment (file name) where the board lies flat on the belt, x along travel")
    p.add_argument("--cameras", metavar="A,B,...", help="cameras that must be present (default: every folder)")
    p.add_argument("--truth", metavar="TRUTH.yaml", help="true calibration to measure the result against")
    p.add_argument("--recording", action="append", default=[], metavar="[NAME=]FILE.db3",
                   help="a recording instead of a connected camera (repeatable)")
    p.add_argument("--serial", action="append", default=[], metavar="NAME=SERIAL",
                   help="which connected camera is which calibration camera (repeatable)")
    p.add_argument("--calib", metavar="CALIB.yaml", help="board calibration to compare with / check")
    p.add_argument("--rig", default="jetson_3cam", choices=["jetson_3cam", "demo"],
                   help="--synthesize: camera tunnel to render (default jetson_3cam, 1280x720)")
    p.add_argument("--shared", type=int, default=14, help="--synthesize: moments seen by several cameras")
    p.add_argument("--per-camera", type=int, default=14, help="--synthesize: moments per camera")
    p.add_argument("--seed", type=int, default=0, help="--synthesize: random seed")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a camera's verdict is FAIL (default: 0 once the file is written)")


def _pairs(values, what):
    from ..foundation.errors import CalibrationError

    out = {}
    for v in values:
        if "=" in v:
            k, _, val = v.partition("=")
            out[k] = val
        elif what == "recording":
            from pathlib import Path

            out[Path(v).stem] = v
        else:
            raise CalibrationError(f"--{what} {v!r}: expected NAME=VALUE")
    return out


def run(args) -> int:
    from ..foundation.errors import CalibrationError

    if args.action == "board":
        return _board_page(args)
    modes = [m for m, on in (("--captures", args.captures), ("--from-device", args.from_device),
                             ("--synthesize", args.synthesize), ("--belt-check", args.belt_check)) if on]
    if len(modes) != 1:
        raise CalibrationError("give exactly one of --captures DIR, --from-device, --synthesize DIR, "
                               f"--belt-check (got {', '.join(modes) or 'none'})")
    check_output_file(args.json, "--json")
    check_output_file(args.out, "--out")
    check_output_dir(args.report, "--report")
    check_output_dir(args.synthesize, "--synthesize")
    with text_to_stderr(args):
        if args.synthesize:
            return _synthesize(args)
        if args.from_device:
            return _from_device(args)
        if args.belt_check:
            return _belt_check(args)
        return _captures(args)


def _captures(args) -> int:
    from ...calibration.model import load_calibration
    from ...calibration.pipeline import (
        run_calibration,
        truth_summary,
        write_calibration,
    )
    from ..foundation.errors import CalibrationError

    if not args.board or not args.out:
        raise CalibrationError("--captures needs --board BOARD.yaml and --out CALIB.yaml")
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None
    result = run_calibration(args.captures, args.board, belt_frame=args.belt_frame, cameras=cameras,
                             progress=progress(args))
    write_calibration(result.calibration, args.out)
    truth = truth_summary(result, load_calibration(args.truth)) if args.truth else None
    if truth:
        result.figures["truth"] = truth
    if args.report:
        from ...calibration.report import write_report

        page = write_report(result, args.report, truth)
        print(f"report: {page}")
    if args.json:
        emit_json(result.figures, args.json)
    f = result.figures
    print(f"wrote {args.out}: {len(f['cameras'])} camera(s), reference {f['reference']}; "
          f"overall {f['verdict'].upper()}")
    for name, c in sorted(f["cameras"].items()):
        print(f"  {name:12s} {c['verdict'].upper():4s}  RMS {c['rms_px']:.3f} px  joint "
              f"{c['joint_rms_px']:.3f} px  {c['views']} views  coverage {c['coverage']['fraction']:.0%}")
        for r in c["reasons"]:
            print(f"    - {r['message']}")
    for pair, c in f["consistency_mm"].items():
        print(f"  consistency {pair}: median {c['median_mm']:.2f} mm, worst {c['max_mm']:.2f} mm "
              f"({f['consistency_frame']}, {c['moments']} moments)")
    if truth:
        w = truth["worst"]
        print("  against truth: focal {focal_pct:.4f} %, principal point {principal_point_px:.3f} px, "
              "RMS {rms_px:.3f} px, relative translation {relative_translation_mm:.3f} mm, "
              "relative rotation {relative_rotation_deg:.4f} deg".format(**w))
        print("  targets met: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in truth["met"].items()))
    return 1 if args.strict and f["verdict"] == "fail" else 0


def _board_page(args) -> int:
    from ...calibration.board import DEFAULT_BOARD, load_board
    from ...calibration.printout import write_board_page
    from ..foundation.errors import CalibrationError

    if not args.out:
        raise CalibrationError("rig calibrate board needs --out BOARD.pdf or BOARD.png")
    spec = load_board(args.board) if args.board else DEFAULT_BOARD
    r = write_board_page(spec, args.out, args.dpi)
    print(f"wrote {r['path']}: {spec.describe()}; page {r['page_mm'][0]:.0f} x {r['page_mm'][1]:.0f} mm at "
          f"{r['dpi']:g} dpi. Print at 100 % (actual size), then measure the {r['ruler_mm']:.0f} mm ruler and "
          f"a square ({spec.square_mm:g} mm) with a calliper; write the measured square_mm into the board YAML")
    if not args.board:
        print("board YAML for this print (save as board.yaml):")
        for k, v in spec.to_dict().items():
            print(f"  {k}: {str(v).lower() if isinstance(v, bool) else v}")
    return 0


def _synthesize(args) -> int:
    from ...tools.sim.charuco import synthesize_captures
    from ...tools.sim.rigs import demo_calibration, jetson_3cam_calibration

    calib = jetson_3cam_calibration() if args.rig == "jetson_3cam" else demo_calibration()
    synthesize_captures(args.synthesize, calib, n_shared=args.shared, n_per_camera=args.per_camera,
                        seed=args.seed, progress=progress(args))
    d = args.synthesize
    print(f"wrote synthetic captures to {d} (board {d}/board.yaml, truth {d}/truth.yaml); calibrate with:\n"
          f"  rig calibrate --captures {d} --board {d}/board.yaml --belt-frame belt "
          f"--truth {d}/truth.yaml --out CALIB.yaml --report REPORT_DIR --json REPORT.json")
    return 0


def _from_device(args) -> int:
    from ...calibration.model import Calibration, load_calibration
    from ...calibration.pipeline import write_calibration
    from ..capture import factory_calibration as device
    from ..foundation.errors import CalibrationError

    calib = load_calibration(args.calib) if args.calib else None
    factories: dict[str, device.FactoryCalibration] = {}
    if args.recording:
        for name, path in _pairs(args.recording, "recording").items():
            factories[name] = device.from_recording(path)
    else:
        size = None
        if calib is not None:
            size = next(iter(calib.cameras.values())).size
        names = {v: k for k, v in _pairs(args.serial, "serial").items()}
        for f in device.from_connected(size):
            factories[names.get(f.serial, f.serial)] = f
    report = {"factory": {n: f.to_dict() for n, f in factories.items()}, "comparison": {}}
    for name, f in sorted(factories.items()):
        print(f"{name}: serial {f.serial or '?'}; colour {f.color_size[0]}x{f.color_size[1]} "
              f"fx {f.color_K[0, 0]:.2f} fy {f.color_K[1, 1]:.2f} cx {f.color_K[0, 2]:.2f} "
              f"cy {f.color_K[1, 2]:.2f}; depth {f.depth_size[0]}x{f.depth_size[1]} "
              f"units {f.depth_units_mm:g} mm; depth->colour t = "
              f"{', '.join(f'{v * 1000:+.2f}' for v in f.T_color_depth[:3, 3])} mm")
        if calib is not None:
            if name not in calib.cameras:
                raise CalibrationError(
                    f"camera {name!r} (serial {f.serial}) is not in {args.calib} (has "
                    f"{sorted(calib.cameras)}) — map it with --serial CAMERA=SERIAL or "
                    "--recording CAMERA=FILE.db3")
            cmp = device.compare(f, calib.cameras[name])
            report["comparison"][name] = cmp
            print(f"  vs board: focal {cmp['focal_diff_pct'][0]:+.3f} % / {cmp['focal_diff_pct'][1]:+.3f} %, "
                  f"principal point {cmp['principal_point_diff_px'][0]:+.2f} / "
                  f"{cmp['principal_point_diff_px'][1]:+.2f} px: {'OK' if cmp['ok'] else 'CHECK'}")
            for note in cmp["notes"]:
                print(f"    - {note}")
    if args.out:
        merged = device.merge_depth(calib if calib is not None else Calibration(cameras={}), factories)
        write_calibration(merged, args.out)
        print(f"wrote {args.out} (depth models from the factory calibration)")
    if args.json:
        emit_json(report, args.json)
    return 0


def _belt_check(args) -> int:
    from ...calibration.belt_plane import compare_with_belt_frame, depth_to_points, fit_belt_plane
    from ...calibration.model import load_calibration
    from ..capture.realsense_io import Recording
    from ..foundation.errors import CalibrationError

    if not args.calib or not args.recording:
        raise CalibrationError("--belt-check needs --calib CALIB.yaml and --recording NAME=FILE.db3")
    calib = load_calibration(args.calib)
    if calib.belt is None:
        raise CalibrationError(f"{args.calib} has no belt frame: calibrate with --belt-frame NAME first")
    out = {}
    worst = "ok"
    for name, path in _pairs(args.recording, "recording").items():
        cam = calib.camera(name)
        rec = Recording(path)
        frame = next(iter(rec.frames()))
        pts_d = depth_to_points(frame.depth, rec.depth_K, rec.depth_units_mm / 1000.0)
        T = rec.T_color_depth
        pts_c = pts_d @ T[:3, :3].T + T[:3, 3]  # colour-camera frame
        n, d = fit_belt_plane(pts_c)
        cmp = compare_with_belt_frame(n, d, cam.T_ref_cam)
        cmp["normal_cam"], cmp["d_cam"] = n.tolist(), d
        level = "ok" if cmp["tilt_deg"] < 1.0 and abs(cmp["offset_below_camera_mm"]) < 5 else "warn"
        cmp["verdict"] = level
        worst = "warn" if level == "warn" else worst
        out[name] = cmp
        print(f"{name}: belt plane from depth vs board belt frame: tilt {cmp['tilt_deg']:.2f} deg, "
              f"offset {cmp['offset_below_camera_mm']:+.1f} mm below the camera, "
              f"{cmp['offset_at_origin_mm']:+.1f} mm at the origin: {level.upper()}")
        if level != "ok":
            print(f"  - {name}: the depth camera and the board disagree about the belt — check that "
                  "the belt was empty and the camera did not move since the board calibration; "
                  "recalibrate with --belt-frame if it did")
    if args.json:
        emit_json(out, args.json)
    return 0 if worst == "ok" else 1

