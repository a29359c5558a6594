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
    p.add_argument("--emulator-faults", default=None, metavar="JSON",
                   help='testing: controller emulator faults, e.g. \'{"silence_after_s": 5, "silence_for_s": 3}\'')


def status_dict(handle, state: str, started_at: float, watchdog=None) -> dict:
    import os

    rig = handle.rig
    link = handle.link
    counters = dict(rig.counters)
    counters["dropped_frames"] = rig.dropped_frames()
    cams = {name: {"fps": s["fps"], "drops": s["dropped"], "frames": s["frames"], "errors": s["errors"],
                   "reconnects": s["reconnects"], "connected": s["last_frame_age_s"] is not None
                   and s["last_frame_age_s"] < 2.0}
            for name, s in rig.camera_stats().items()}
    lc = getattr(link, "counters", {}) or {}
    return {"state": state, "pid": os.getpid(), "started_at": started_at, "config": str(handle.cfg.source_path),
            "cameras": cams,
            "inference": {"backend": rig.scorer.backend.name, "describe": rig.scorer.backend.describe(),
                          "preprocess": rig.pre.name},
            "model_version": str(getattr(rig.scorer, "version", "")),
            "controller": {"link": "up" if link.healthy else "down", "last_error": link.last_error,
                           "retransmits": lc.get("retransmits", 0), "faults": lc.get("faults", 0),
                           "crc_errors": lc.get("crc_errors", 0)},
            "counters": counters, "latency_ms": rig.summary()["latency_ms"],
            "event_log": handle.events.stats() if hasattr(handle.events, "stats") else None,
            "stuck": watchdog.stuck() if watchdog is not None else []}


def degraded(st: dict, status_error: str | None = None) -> list[str]:
    """What is not working but does not stop the rig deciding (empty when all is well)."""
    out = []
    ev = st.get("event_log") or {}
    if ev.get("error"):
        out.append(f"event log not writable for {ev['error_for_s']:.0f} s ({ev['error']}); "
                   f"{ev['backlog']} record(s) waiting")
    if ev.get("records_dropped"):
        out.append(f"{ev['records_dropped']} record(s) dropped (backlog full)")
    if status_error:
        out.append(f"status file not written ({status_error})")
    return out


def one_line(st: dict, status_error: str | None = None) -> str:
    c = st["counters"]
    line = (f"{st['state']}: {c['items']} items, {c['diverted']} diverted, {c['late']} late, "
            f"{c['dropped_frames']} dropped frames, link {st['controller']['link']}")
    bad = degraded(st, status_error)
    return line + ("; DEGRADED: " + "; ".join(bad) if bad else "")


def run(args) -> int:
    import json
    import signal
    import sys
    import threading
    import time

    from ..config import check_config
    from ..errors import ConfigError
    from ..runtime import open_rig
    from ..service.notify import Notifier
    from ..service.status import StatusWriter
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
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"state_dir": args.state})})
        cfg = cfg.model_copy(update={"source_path": cfg.source_path})
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watchdog = ProgressWatchdog(notifier, stages=("trigger", "prepare", "infer", "deadline"))
    state_dir = cfg.state_dir if not args.state else __import__("pathlib").Path(args.state)
    notifier.status("starting: opening cameras, model and divert link")
    faults = {}
    for key in ("camera_faults", "emulator_faults"):
        text = getattr(args, key, None)
        if text:
            try:
                faults[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--{key.replace('_', '-')}: not JSON ({exc})") from exc
    handle = open_rig(cfg, state_dir=state_dir, sim_items=args.sim_items, watchdog=watchdog, **faults)
    rig = handle.rig
    status = StatusWriter(state_dir)  # a full or read-only state disk is reported, never fatal
    write_status = status.write
    try:
        if handle.sim_belt is not None:
            handle.sim_belt.begin()
        rig.start()
        watchdog.start()
        st = status_dict(handle, "running", started_at, watchdog)
        write_status(st)
        notifier.ready(one_line(st, status.error))
        t0 = time.monotonic()
        while not stop.wait(1.0):
            st = status_dict(handle, "running", started_at, watchdog)
            write_status(st)
            notifier.status(one_line(st, status.error))
            if args.max_seconds is not None and time.monotonic() - t0 > args.max_seconds:
                break
            if rig.sources_finished() and rig.idle():
                break
            if rig.crashed:
                break
        notifier.stopping("stopping: finishing items in flight")
        write_status(status_dict(handle, "stopping", started_at, watchdog))
        rig.stop()
        watchdog.stop()
        if handle.events is not None:
            handle.events.flush(10.0)  # rows still queued (a disk that just came back) go in first
        final = status_dict(handle, "stopped", started_at, watchdog)
        write_status(final)
        print(one_line(final, status.error))
    finally:
        handle.close()
        notifier.close()
    if rig.crashed:
        print(f"rig run: stage {rig.crashed} crashed (see the log); exiting so the service manager restarts the rig",
              file=sys.stderr)
        return 1
    return 0
