"""`rig status`: the rig's health from its state directory (or the config that names it); a health check.

Exit code: 0 healthy, 1 degraded, 2 down (rig/service/health.py says which
condition is which). ``--json`` prints one object: state, problems, decisions,
diverted, late, failsafe (and its reasons), latency_ms {p50, p99} over the last
minute, link, mqtt, scan, and the status file, event-log counts, recent
decisions and drift flags it was computed from.
"""

from __future__ import annotations

from ._common import add_json, check_output_file, emit_json, human

NAME = "status"
HELP = ("health check: cameras, inference, model, controller link, decisions, latency, recent decisions, drift; "
        "exits 0 healthy, 1 degraded, 2 down")


def add_arguments(p):
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="DIR", help="the rig's state directory (default: where `rig demo` "
                       "keeps its state, $XDG_STATE_HOME/damage-rig/demo or ~/.local/state/damage-rig/demo)")
    where.add_argument("--config", metavar="FILE", help="rig configuration (its storage.state_dir is read)")
    p.add_argument("--recent", type=int, default=10, help="recent decisions to show (default 10)")
    add_json(p, "the health as one object")


def state_dir_from(args):
    """--state, else --config's storage.state_dir, else where `rig demo` keeps its state (status and review)."""
    from pathlib import Path

    from ..config import demo_state_dir, load_config

    if getattr(args, "state", None):
        return Path(args.state).expanduser()
    if getattr(args, "config", None):
        return load_config(args.config).state_dir
    return demo_state_dir()


def run(args) -> int:
    from ..foundation.errors import DeviceError
    from ..service.health import DOWN, EXIT_CODES, summary
    from ..service.report import format_text, gather

    check_output_file(args.json, "--json")
    state = state_dir_from(args)
    try:
        info = gather(state, recent=args.recent)
    except DeviceError as exc:  # an unreadable status file or event log: the rig cannot be vouched for
        h = {"state": DOWN, "problems": [str(exc)], "exit_code": EXIT_CODES[DOWN]}
        emit_json(h, args.json)
        print(f"health: DOWN ({exc})", file=human(args))
        return EXIT_CODES[DOWN]
    h = summary(info)
    if args.json:
        emit_json({**h, "state_dir": info["state_dir"], "status": info["status"], "counts": info["counts"],
                   "event_log_error": info.get("event_log_error"),
                   "recent": info["recent"], "drift": info["drift"]}, args.json)
    print(format_text(info), file=human(args))
    if not (args.state or args.config) and info["status"] is None and not info["counts"]:
        print(f"(nothing in {state} yet: run `rig demo`, or give --state DIR or --config FILE)", file=human(args))
    return h["exit_code"]
