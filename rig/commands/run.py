"""`rig run --config FILE`: the service entry point (systemd runs this)."""

from __future__ import annotations

NAME = "run"
HELP = "run the rig from a config until stopped (the systemd service's entry point)"


def add_arguments(p):
    p.add_argument("--config", required=True, help="rig configuration YAML")
    p.add_argument("--state", default=None, help="state directory (default: storage.state_dir of the config)")
    p.add_argument("--sim-items", type=int, default=None,
                   help="with sim cameras: stop after this many items (default: an endless belt)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long (testing)")
    p.add_argument("--camera-faults", default=None, metavar="JSON",
                   help='testing: inject sim camera faults, e.g. \'{"top": [{"kind": "hang", "at_s": 4}]}\'')
    p.add_argument("--id-clock-offset", type=float, default=None, metavar="S",
                   help="testing: draw item ids from a wall clock S seconds ahead (rehearses a restart after "
                        "the clock jumped, against a long-lived controller)")
    p.add_argument("--emulator-faults", default=None, metavar="JSON",
                   help='testing: controller emulator faults, e.g. \'{"silence_after_s": 5, "silence_for_s": 3}\'')


def run(args) -> int:
    import json
    import signal
    import sys
    import threading
    import time

    from ..config import check_config
    from ..foundation.errors import ConfigError
    from ..service.assemble import open_rig
    from ..service.loop import serve
    from ..service.notify import Notifier
    from ..service.status import StatusWriter, one_line, status_dict
    from ..service.watchdog import ProgressWatchdog

    started_at = time.time()
    notifier = Notifier()
    try:
        cfg = check_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        notifier.status("configuration invalid: " + exc.problems[0])
        return 1
    if args.state:
        cfg = cfg.with_state_dir(args.state)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watchdog = ProgressWatchdog(notifier, stages=("trigger", "prepare", "infer", "score", "deadline"))
    state_dir = cfg.state_dir
    notifier.status("starting: opening cameras, model and divert link")
    sim = {}
    if args.sim_items is not None:
        sim["items"] = args.sim_items
    if args.id_clock_offset is not None:
        sim["id_clock_offset_s"] = args.id_clock_offset
    for key in ("camera_faults", "emulator_faults"):
        text = getattr(args, key, None)
        if text:
            try:
                sim[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--{key.replace('_', '-')}: not JSON ({exc})") from exc
    if sim:
        cfg = cfg.with_sim(**sim)
    handle = open_rig(cfg, watchdog=watchdog)
    rig = handle.rig

    status = StatusWriter(state_dir)  # a full or read-only state disk is reported, never fatal

    def report(state: str) -> dict:
        st = status_dict(handle, state, started_at, watchdog)
        status.write(st)
        return st

    def line(st: dict) -> str:
        return one_line(st, status.error)

    def started() -> None:
        watchdog.start()
        notifier.ready(line(report("running")))

    def stopping() -> None:
        notifier.stopping("stopping: finishing items in flight")
        report("stopping")

    try:
        serve(handle, stop=stop, max_s=args.max_seconds, wait_for_gates=False, poll_s=1.0, on_started=started,
              on_tick=lambda: notifier.status(line(report("running"))), on_stopping=stopping)
        watchdog.stop()
        if hasattr(handle.events, "flush"):
            handle.events.flush(10.0)  # rows still queued (a disk that just came back) go in first
        print(line(report("stopped")))
    finally:
        handle.close()
        notifier.close()
    if rig.crashed:
        print(f"rig run: stage {rig.crashed} crashed (see the log); exiting so the service manager restarts the rig",
              file=sys.stderr)
        return 1
    return 0
