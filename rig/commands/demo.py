"""`rig demo`: the whole rig on a simulated belt, the shipped model and an emulated divert controller."""

from __future__ import annotations

NAME = "demo"
HELP = "run the whole rig on the simulated belt with the shipped model and an emulated actuator"


def add_arguments(p):
    p.add_argument("--items", type=int, default=20, help="items on the belt (default 20)")
    p.add_argument("--seed", type=int, default=1, help="belt seed (default 1)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the summary to OUT")
    p.add_argument("--config", default=None, help="rig config (default: the embedded demo config)")
    p.add_argument("--damage-rate", type=float, default=0.2,
                   help="share of damaged items on the simulated belt (default 0.2)")
    p.add_argument("--corrupt", type=float, default=0.0, help="emulator: share of frames corrupted")
    p.add_argument("--drop", type=float, default=0.0, help="emulator: share of frames dropped")
    p.add_argument("--state", default=None, help="state directory (default: a fresh temporary one)")


def summarize(handle, gate_log: list[dict]) -> dict:
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
    }
    return out


def run(args) -> int:
    import json
    import tempfile
    import time
    from pathlib import Path

    from ..config import DEMO_CONFIG, check_config
    from ..foundation.errors import RigError
    from ..service.assemble import open_rig
    from ..service.loop import serve

    if args.items < 1:
        raise RigError(f"--items must be at least 1, got {args.items}")
    for name in ("damage_rate", "corrupt", "drop"):
        if not 0 <= getattr(args, name) <= 1:
            raise RigError(f"--{name.replace('_', '-')} must be between 0 and 1")
    cfg = check_config(args.config or DEMO_CONFIG)
    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="damage-rig-demo-"))
    faults = {"corrupt": args.corrupt, "drop": args.drop, "seed": args.seed} if (args.corrupt or args.drop) else None
    cfg = cfg.with_state_dir(state).with_sim(items=args.items, seed=args.seed, damage_rate=args.damage_rate,
                                             emulator_faults=faults)
    print(f"rig demo: {args.items} items at {cfg.belt.speed_mps} m/s, cameras "
          f"{[c.name for c in cfg.cameras]}, model {cfg.model_dir.name}, state {state}")
    t0 = time.monotonic()
    handle = open_rig(cfg, keep_items=True)
    try:
        print(f"rig demo: controller emulator on {handle.emulator.port}; inference "
              f"{handle.rig.scorer.backend.describe()}; preprocess {handle.rig.pre.name}")
        belt_s = (handle.sources.end_time() or 0) + 2.0
        serve(handle, max_s=belt_s + 60)
        time.sleep(0.3)  # let the last ACKs and firings land in the gate log
        gate_log = handle.emulator.gate_log()
        summary = summarize(handle, gate_log)
    finally:
        handle.close()
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0
