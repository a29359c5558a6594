"""`rig view`: a live page of what the rig sees — each camera with the belt ROI and the tracked
items, the trigger's height map, and the latest decisions (rig/service/liveview.py).

    rig view [--config FILE] [--state DIR] [--host 127.0.0.1] [--port 8090] [--token-file FILE]

It opens the cameras itself (commissioning: run it while `rig run` is stopped; a
RealSense camera serves one process). Decisions come from the state
directory's event log.
"""

from __future__ import annotations

NAME = "view"
HELP = "live page: each camera with the belt ROI and tracked items, the trigger height map, latest decisions"


def add_arguments(p):
    p.add_argument("--config", metavar="FILE", help="rig configuration (default: the demo config)")
    p.add_argument("--state", metavar="DIR", help="state directory whose decisions to show "
                   "(default: --config's storage.state_dir, else the demo's)")
    from .review import add_bind_arguments

    add_bind_arguments(p, 8090)


def run(args) -> int:

    from ...calibration.model import load_calibration
    from ..capture.sources import open_sources
    from ..config import DEMO_CONFIG, load_config
    from ..foundation.errors import ConfigError
    from ..review.guard import Guard
    from ..service.liveview import LiveView, ViewServer
    from .review import _token
    from .status import state_dir_from

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: not a port number (0..65535)")
    token = _token(args)
    cfg = load_config(args.config or DEMO_CONFIG)
    state = state_dir_from(args)  # --state, --config's, else where `rig demo` keeps its state
    calib = load_calibration(cfg.calibration_path)
    Guard(args.host.strip("[]"), 1, token)  # refuse a bind beyond loopback without a token before opening cameras
    view = LiveView(cfg, calib, open_sources(cfg, calib), state)
    try:
        server = ViewServer(view, port=args.port, host=args.host, token=token)
    except OSError as exc:
        view.sources.close()
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    view.start()
    print(f"live view of {cfg.name} ({', '.join(view.names)}; decisions from {state}): {server.url}  "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_until_interrupted()
    finally:
        view.stop()
    return 0
