"""`rig status`: the service's health from its state directory (or the config that names it)."""

from __future__ import annotations

NAME = "status"
HELP = "show the rig's health: cameras, inference, model, controller link, recent decisions, drift"


def add_arguments(p):
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="DIR", help="the rig's state directory")
    where.add_argument("--config", metavar="FILE", help="rig configuration (its storage.state_dir is read); "
                       "default: the demo config")
    p.add_argument("--recent", type=int, default=10, help="recent decisions to show (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--serve-metrics", type=int, metavar="PORT",
                   help="instead of printing, serve Prometheus metrics on 127.0.0.1:PORT/metrics until Ctrl-C")


def state_dir_from(args):
    """--state, else --config's storage.state_dir, else the demo config's (shared by status and review)."""
    from pathlib import Path

    from ..config import DEMO_CONFIG, load_config

    if getattr(args, "state", None):
        return Path(args.state).expanduser()
    return load_config(args.config or DEMO_CONFIG).state_dir


def run(args) -> int:
    import json

    from ..service.report import format_text, gather

    state = state_dir_from(args)
    if args.serve_metrics is not None:
        import threading

        from ..service.metrics import MetricsServer

        server = MetricsServer(state, port=args.serve_metrics).start()
        print(f"serving http://127.0.0.1:{server.port}/metrics for {state} (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        finally:
            server.stop()
    info = gather(state, recent=args.recent)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print(format_text(info))
    return 0
