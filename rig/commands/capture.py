"""`rig capture --stills DIR`: synchronised calibration stills from every configured camera.

    rig capture --stills DIR [--config FILE] [--board BOARD.yaml] [--cameras A,B]
                [--every S [--count N]]

On a key (space or Enter; q finishes; from a pipe, one still per line) or every S seconds, one still
per camera of the same moment is saved as ``DIR/CAMERA/still_NNN.png`` — the
layout `rig calibrate --captures DIR` reads — and the ChArUco board is detected
in it. One line per still says how many corners each camera saw and how much
of its image the board has covered so far; ``DIR/coverage.png`` shows it
(green cells covered, red still empty). ``DIR/board.yaml`` is written when
absent (the documented default board unless --board is given).
"""

from __future__ import annotations

NAME = "capture"
HELP = "take synchronised ChArUco stills from every camera, with live board coverage (for rig calibrate)"


def add_arguments(p):
    p.add_argument("--stills", metavar="DIR", required=True, help="captures folder (DIR/CAMERA/still_NNN.png)")
    p.add_argument("--config", metavar="FILE", help="rig configuration whose cameras to use (default: the demo config)")
    p.add_argument("--board", metavar="BOARD.yaml", help="board description (default: DIR/board.yaml, else the "
                   "documented default board)")
    p.add_argument("--cameras", metavar="A,B", help="only these configured cameras")
    p.add_argument("--every", type=float, metavar="S", help="take a still every S seconds instead of on Enter")
    p.add_argument("--count", type=int, default=0, metavar="N", help="with --every: stop after N stills "
                   "(default: until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for a synchronised set of frames (default 10)")


def _keys(stream):
    """'still' per key press (a terminal, one key at a time) or per line (a pipe); 'q' to finish.

    End of input counts as 'q'."""
    import os

    if stream.isatty():
        import termios
        import tty

        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while True:
                ch = os.read(fd, 1).decode(errors="replace")
                yield "q" if ch in ("q", "Q", "\x04", "") else "still"
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    for line in stream:
        yield "q" if line.strip().lower() in ("q", "quit") else "still"
    while True:
        yield "q"


def _next_index(root, cameras) -> int:
    import re

    n = 0
    for cam in cameras:
        for p in (root / cam).glob("still_*.png"):
            m = re.fullmatch(r"still_(\d+)", p.stem)
            if m:
                n = max(n, int(m.group(1)))
    return n + 1


def _open(args):
    from ...calibration.model import load_calibration
    from ..capture.sources import open_sources
    from ..config import DEMO_CONFIG, load_config
    from ..foundation.errors import CalibrationError, ConfigError

    cfg = load_config(args.config or DEMO_CONFIG)
    if args.cameras:
        wanted = [c.strip() for c in args.cameras.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c.name for c in cfg.cameras})
        if unknown:
            raise ConfigError(f"--cameras: {unknown} not in the config's cameras {[c.name for c in cfg.cameras]}")
        cfg = cfg.model_copy(update={"cameras": [c for c in cfg.cameras if c.name in wanted]})
    try:
        calib = load_calibration(cfg.calibration_path)
    except CalibrationError:
        if any(c.source == "sim" for c in cfg.cameras):
            raise
        calib = None  # commissioning: live cameras need no calibration to take stills
    return cfg, open_sources(cfg, calib)


def run(args) -> int:
    import sys
    import time
    from pathlib import Path

    import cv2

    from ...calibration.board import DEFAULT_BOARD, load_board, save_board
    from ...calibration.live_coverage import CoverageTracker
    from ..capture.stills import StillTaker
    from ..foundation.errors import ConfigError
    from ._common import check_output_dir

    if args.every is not None and not 0.05 <= args.every <= 3600:
        raise ConfigError(f"--every {args.every}: give seconds between 0.05 and 3600")
    if args.count < 0 or (args.count and args.every is None):
        raise ConfigError("--count N goes with --every S (N >= 1)")
    root = Path(args.stills)
    check_output_dir(args.stills, "--stills")  # before any camera opens
    spec = load_board(args.board) if args.board else (
        load_board(root / "board.yaml") if (root / "board.yaml").is_file() else DEFAULT_BOARD)
    cfg, sources = _open(args)
    names = [c.name for c in cfg.cameras]
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / n).mkdir(exist_ok=True)
    if not (root / "board.yaml").is_file():
        save_board(spec, root / "board.yaml")
    tracker = CoverageTracker(spec)
    index = _next_index(root, names)
    taker = StillTaker(dict(zip(names, sources.cameras)), cfg.capture.sync_tolerance_ms)
    sources.begin()
    taker.start()
    print(f"capturing stills of the board ({spec.describe()}) from {', '.join(names)} into {root}/")
    print("press a key (space, Enter) for a still, q to finish" if args.every is None else
          f"a still every {args.every:g} s" + (f", {args.count} in all" if args.count else " (Ctrl-C stops)"),
          flush=True)
    taken, last_ms = 0, -1.0
    keys = _keys(sys.stdin)
    try:
        next_at = time.monotonic()
        while True:
            if args.every is None:
                if next(keys) == "q":
                    break
            else:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = time.monotonic() + args.every
            frames = taker.take(args.timeout, after_ms=last_ms)
            last_ms = max(g.timestamp_ms for g in frames.values())
            name = f"still_{index:03d}"
            parts = []
            for cam, g in frames.items():
                cv2.imwrite(str(root / cam / f"{name}.png"), cv2.cvtColor(g.color, cv2.COLOR_RGB2BGR))
                n = tracker.add(cam, g.color)
                parts.append(f"{cam} {n:3d} corners")
            cover = ", ".join(f"{cam} {tracker.summary(cam)['fraction']:.0%} ({tracker.summary(cam)['views']} "
                              "stills)" for cam in frames)
            cv2.imwrite(str(root / "coverage.png"), tracker.picture({c: g.color for c, g in frames.items()}))
            print(f"{name}: {' | '.join(parts)} -- covered so far: {cover}", flush=True)
            index += 1
            taken += 1
            if args.every is not None and args.count and taken >= args.count:
                break
    except KeyboardInterrupt:
        print()
    finally:
        keys.close()  # the terminal back to line mode
        taker.stop()
        sources.close()
    print(f"{taken} still(s) per camera saved in {root}/ (coverage picture: {root}/coverage.png); calibrate with:\n"
          f"  rig calibrate --captures {root} --board {root}/board.yaml --out calib.yaml --report report/")
    return 0
