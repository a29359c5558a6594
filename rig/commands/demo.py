"""`rig demo`: the whole rig on a simulated belt, the shipped model and an emulated divert controller."""

from __future__ import annotations

from ._common import add_json, check_output_file, emit_json, text_to_stderr

NAME = "demo"
HELP = "run the whole rig on the simulated belt with the shipped model and an emulated actuator"


def add_arguments(p):
    p.add_argument("--items", type=int, default=20, help="items on the belt (default 20)")
    p.add_argument("--seed", type=int, default=1, help="belt seed (default 1)")
    add_json(p, "the summary")
    p.add_argument("--config", default=None, help="rig config (default: the embedded demo config)")
    p.add_argument("--damage-rate", type=float, default=0.2,
                   help="share of damaged items on the simulated belt (default 0.2)")
    p.add_argument("--corrupt", type=float, default=0.0, help="emulator: share of frames corrupted")
    p.add_argument("--drop", type=float, default=0.0, help="emulator: share of frames dropped")
    p.add_argument("--state", default=None, metavar="DIR",
                   help="state directory, added to (default: $XDG_STATE_HOME/damage-rig/demo or "
                        "~/.local/state/damage-rig/demo, emptied first; `rig status` and `rig review` look there)")
    p.add_argument("--scan", default=None, metavar="WRONG,MISSING,UNREADABLE",
                   help="an upstream barcode scanner 0.5 m before the cameras, with these shares of wrong, missing "
                        "and unreadable scans (e.g. 0.05,0.05,0.02); the rig checks each item against its scan")


def summarize(handle, gate_log: list[dict]) -> dict:
    from collections import Counter

    rig = handle.rig
    s = rig.summary()
    items = rig.items_snapshot()
    fired = {e.get("item_id") for e in gate_log if e.get("event") == "fired"}
    truth_damaged = [it for it in items if it.truth and it.truth.get("damaged")]
    caught = [it for it in truth_damaged if it.no in fired]
    false_diverts = [it for it in items if it.no in fired and not (it.truth and it.truth.get("damaged"))]
    out = {
        "items": s["items"], "decisions": s["decisions"], "diverted": s["diverted"],
        "divert_acked": s["divert_acked"], "gate_fired": len(fired), "late": s["late"],
        "dropped_frames": s["dropped_frames"], "true_damaged": len(truth_damaged), "caught": len(caught),
        "false_diverts": len(false_diverts), "failsafe": s["failsafe"], "faults": s["faults"],
        "latency_ms": s["latency_ms"], "throughput_items_per_s": s["throughput_items_per_s"],
        "unmatched_truth": sum(1 for it in items if it.truth is None),
        "by_reason": dict(sorted(Counter(it.reason for it in items).items())),
    }
    scanner = getattr(handle, "sim_scanner", None)
    if scanner is not None:  # what the scanner did to each item, and the reason the rig gave it
        kinds = {r["index"]: r["kind"] for r in scanner.sent}
        table: dict = {}
        for it in items:
            if it.truth is not None and it.truth.get("index") in kinds:
                row = table.setdefault(kinds[it.truth["index"]], Counter())
                row[it.reason] += 1
        out["scan"] = {k: dict(v) for k, v in sorted(table.items())}
    return out


def format_summary(s: dict) -> str:
    """The few lines a person reads after a demo."""
    ok_items = s["items"] - s["true_damaged"]
    lat = s["latency_ms"]
    belt = s.get("items_on_belt", s["items"])
    seen = f"{s['items']} items" if belt == s["items"] else f"{s['items']} of {belt} items on the belt seen"
    lines = [f"rig demo: {seen}, {s['decisions']} decisions in {s['wall_s']:g} s",
             (f"  diverted      {s['diverted']} ({s['divert_acked']} acknowledged, {s['gate_fired']} fired at "
              f"the gate), late {s['late']}, fail-safe {s['failsafe']}"),
             f"  caught        {s['caught']} of {s['true_damaged']} damaged",
             f"  false diverts {s['false_diverts']} of {ok_items} ok items"]
    if lat.get("p50") is not None:
        lines.append(f"  latency       p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms (decision after capture)")
    if s.get("scan"):
        lines.append("  scans         " + "; ".join(f"{k}: {v}" for k, v in s["scan"].items()))
    return "\n".join(lines)


def _rig() -> str:
    """How to call rig here: the venv's own when `rig` is not on PATH (bootstrap.sh runs .venv/bin/rig)."""
    import shutil
    import sys
    from pathlib import Path

    own = Path(sys.executable).parent / "rig"
    return str(own) if shutil.which("rig") is None and own.is_file() else "rig"


def next_steps(state, default_state: bool) -> str:
    where = "" if default_state else f" --state {state}"
    rig = _rig()
    return "\n".join([
        f"state in {state}; next:",
        f"  {rig} status{where}     health, counts and the latest decisions",
        f"  {rig} review{where}     the diverted items in your browser, to label",
        f"  {rig} demo --items 100 --json summary.json     a longer run, its summary as JSON"])


def run(args) -> int:
    with text_to_stderr(args):
        return _demo(args)


def _demo(args) -> int:
    import shutil
    import time
    from pathlib import Path

    from ..config import DEMO_CONFIG, ScanConfig, check_config, demo_state_dir
    from ..foundation.errors import RigError
    from ..service.assemble import open_rig
    from ..service.loop import serve
    from ..service.status import StatusWriter, status_dict

    if args.items < 1:
        raise RigError(f"--items must be at least 1, got {args.items}")
    for name in ("damage_rate", "corrupt", "drop"):
        if not 0 <= getattr(args, name) <= 1:
            raise RigError(f"--{name.replace('_', '-')} must be between 0 and 1")
    check_output_file(args.json, "--json")  # before the belt runs, not after
    cfg = check_config(args.config or DEMO_CONFIG)
    scanner = {}
    if args.scan:
        try:
            wrong, missing, unreadable = (float(x) for x in args.scan.split(","))
        except ValueError:
            raise RigError(f"--scan {args.scan!r}: expected three shares WRONG,MISSING,UNREADABLE") from None
        cfg = cfg.model_copy(update={"scan": ScanConfig(url="sim", distance_m=0.5)})
        scanner = {"scanner": {"wrong_rate": wrong, "missing_rate": missing, "unreadable_rate": unreadable}}
    default_state = not args.state
    state = Path(args.state).expanduser() if args.state else demo_state_dir()
    if default_state and state.exists():
        shutil.rmtree(state)  # the previous demo's: status and review show this one
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RigError(f"state directory {state}: cannot create it ({exc.strerror or exc})") from None
    faults = {"corrupt": args.corrupt, "drop": args.drop, "seed": args.seed} if (args.corrupt or args.drop) else None
    cfg = cfg.with_state_dir(state).with_sim(items=args.items, seed=args.seed, damage_rate=args.damage_rate,
                                             emulator_faults=faults, **scanner)
    print(f"rig demo: {args.items} items at {cfg.belt.speed_mps} m/s, cameras "
          f"{[c.name for c in cfg.cameras]}, model {cfg.model_dir.name}, state {state}", flush=True)
    t0 = time.monotonic()
    started_at = time.time()
    handle = open_rig(cfg, keep_items=True)
    try:
        print(f"rig demo: controller emulator on {handle.emulator.port}; inference "
              f"{handle.rig.scorer.backend.describe()}; preprocess {handle.rig.pre.name}", flush=True)
        belt_s = (handle.sources.end_time() or 0) + 2.0
        serve(handle, max_s=belt_s + 60)
        time.sleep(0.3)  # let the last ACKs and firings land in the gate log
        gate_log = handle.emulator.gate_log()
        summary = summarize(handle, gate_log)
        if hasattr(handle.events, "flush"):
            handle.events.flush(10.0)
        # what `rig status` reads: this demo's counts, marked as a finished demo
        StatusWriter(state).write(dict(status_dict(handle, "stopped", started_at), demo=True))
    finally:
        handle.close()
    summary["items_on_belt"] = args.items
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    summary["state_dir"] = str(state)
    emit_json(summary, args.json)
    print(format_summary(summary))
    print(next_steps(state, default_state))
    return 0
