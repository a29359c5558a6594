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
    import time

    rig = handle.rig
    link = handle.link
    counters = dict(rig.counters)
    counters["dropped_frames"] = rig.dropped_frames()
    cams = {name: {"fps": s["fps"], "drops": s["dropped"], "frames": s["frames"], "errors": s["errors"],
                   "reconnects": s["reconnects"], "connected": s["last_frame_age_s"] is not None
                   and s["last_frame_age_s"] < 2.0}
            for name, s in rig.camera_stats().items()}
    lc = getattr(link, "counters", {}) or {}
    from ..service.health import free_bytes

    hb = getattr(link, "heartbeat_age_s", None)
    writes_failing = []
    now = time.monotonic()
    failures = counters.get("event_write_failures", 0)
    if failures > handle.write_failures_seen[0]:  # a write failed since the last status: flagged for a minute
        handle.write_failures_seen = (failures, now)
    if failures and now - handle.write_failures_seen[1] < 60.0:
        writes_failing.append(f"event log ({failures} failed writes since start, the last "
                              f"{now - handle.write_failures_seen[1]:.0f} s ago)")
    if getattr(handle, "status_write_error", None):
        writes_failing.append(f"status file ({handle.status_write_error})")
    extra = {"decisions": handle.stats.snapshot() if handle.stats is not None else None,
             "writes_failing": writes_failing, "state_dir_free_bytes": free_bytes(handle.state_dir)}
    if handle.mqtt is not None:
        extra["mqtt"] = handle.mqtt.stats()
    if handle.expected is not None:
        extra["scan"] = dict(handle.expected.counters, pending=handle.expected.pending())
    return {**extra, "state": state, "pid": os.getpid(), "started_at": started_at, "config": str(handle.cfg.source_path),
            "cameras": cams,
            "inference": {"backend": rig.scorer.backend.name, "describe": rig.scorer.backend.describe(),
                          "preprocess": rig.pre.name},
            "model_version": str(getattr(rig.scorer, "version", "")),
            "controller": {"link": "up" if link.healthy else "down", "last_error": link.last_error,
                           "port": getattr(link, "url", None),
                           "last_heartbeat_s": None if hb is None else round(hb, 3),
                           "retransmits": lc.get("retransmits", 0), "faults": lc.get("faults", 0),
                           "crc_errors": lc.get("crc_errors", 0)},
            "counters": counters,
            "stuck": watchdog.stuck() if watchdog is not None else []}


def one_line(st: dict) -> str:
    c = st["counters"]
    return (f"{st['state']}: {c['items']} items, {c['diverted']} diverted, {c['late']} late, "
            f"{c['dropped_frames']} dropped frames, link {st['controller']['link']}")


def run(args) -> int:
    import logging

    log = logging.getLogger("damage_rig.rig.run")
    import json
    import signal
    import sys
    import threading
    import time

    from ..config import check_config
    from ..errors import ConfigError, DeviceError
    from ..runtime import open_rig
    from ..service.notify import Notifier
    from ..service.status import write_status
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
    try:
        if handle.sim_belt is not None:
            handle.sim_belt.begin()
        rig.start()
        watchdog.start()
        st = status_dict(handle, "running", started_at, watchdog)
        write_status(state_dir, st)
        notifier.ready(one_line(st))
        t0 = time.monotonic()
        while not stop.wait(1.0):
            st = status_dict(handle, "running", started_at, watchdog)
            try:
                write_status(state_dir, st)
                handle.status_write_error = None
            except DeviceError as exc:  # a full disk must not stop the rig: the status goes stale, health says why
                if handle.status_write_error is None:
                    log.error("%s", exc)
                handle.status_write_error = str(exc)
            notifier.status(one_line(st))
            if args.max_seconds is not None and time.monotonic() - t0 > args.max_seconds:
                break
            if rig.sources_finished() and rig.idle():
                break
            if rig.crashed:
                break
        notifier.stopping("stopping: finishing items in flight")
        write_status(state_dir, status_dict(handle, "stopping", started_at, watchdog))
        rig.stop()
        watchdog.stop()
        final = status_dict(handle, "stopped", started_at, watchdog)
        write_status(state_dir, final)
        print(one_line(final))
    finally:
        handle.close()
        notifier.close()
    if rig.crashed:
        print(f"rig run: stage {rig.crashed} crashed (see the log); exiting so the service manager restarts the rig",
              file=sys.stderr)
        return 1
    return 0
