"""`rig bench`: per-stage latency, end-to-end latency, throughput and the load sweep (tools/bench does the work)."""

from __future__ import annotations

from ._common import add_json, emit_json, text_to_stderr

NAME = "bench"
HELP = ("profile the pipeline's latency per stage at an item rate or over a load sweep, or its capacity "
        "(closed loop, stand-ins out of process) with the rig's own CPU per item; trace and plot")


def add_arguments(p):
    p.add_argument("--config", default=None, help="rig config with sim cameras (default: the embedded demo config)")
    p.add_argument("--items", type=int, default=30, help="items on the simulated belt per run (default 30)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=float, default=None, metavar="ITEMS_PER_S",
                   help="item rate (default: the config's belt speed / item pitch)")
    g.add_argument("--sweep", action="store_true",
                   help="find the highest item rate with no late decision, then report the run at 80 %% of it")
    g.add_argument("--capacity", action="store_true",
                   help="closed loop: cached frame sets from a driver process (shared memory) as fast as the "
                        "pipeline takes them; capacity and CPU per item next to the model alone")
    p.add_argument("--pitch", type=float, default=None, metavar="M",
                   help="item pitch on the belt for --rate/--sweep (default: the config's, at least 0.4 m)")
    p.add_argument("--preprocess", default=None, metavar="BACKEND",
                   help="preprocessing backend for this bench (opencv, twin, cuda; default: the config's)")
    p.add_argument("--sets", type=int, default=40,
                   help="--capacity: distinct frame sets rendered once, cached, and cycled (default 40)")
    p.add_argument("--in-flight", type=int, default=4,
                   help="--capacity: items undecided at most, closed loop (default 4)")
    p.add_argument("--sweep-low", type=float, default=0.5, help="lowest rate the sweep tries (default 0.5)")
    p.add_argument("--sweep-high", type=float, default=None,
                   help="highest rate the sweep tries (default: a 10 m/s belt at the pitch)")
    p.add_argument("--sweep-steps", type=int, default=4, help="bisection steps after both ends (default 4)")
    p.add_argument("--sweep-items", type=int, default=15,
                   help="items per sweep step (default 15); --items is for the reported run")
    p.add_argument("--model-seconds", type=float, default=3.0,
                   help="how long the model runs alone for its throughput (default 3)")
    p.add_argument("--warmup-items", type=int, default=3,
                   help="items of a discarded warm-up run before measuring (default 3; 0: none)")
    p.add_argument("--settle-s", type=float, default=2.0,
                   help="the first seconds of each run are start-up, reported apart (default 2)")
    p.add_argument("--seed", type=int, default=1, help="belt seed (default 1)")
    add_json(p, "the report")
    p.add_argument("--trace", default=None, metavar="OUT.json", help="write a Chrome trace of the reported run")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write latency histograms/CDFs and the sweep")


def _check(args) -> None:
    from pathlib import Path

    from ..foundation.errors import RigError

    if args.items < 1:
        raise RigError(f"--items must be at least 1, got {args.items}")
    if args.capacity and args.items < 2:
        raise RigError(f"--capacity needs --items of at least 2, got {args.items}")
    if args.pitch is not None and not 0.2 <= args.pitch <= 10:
        raise RigError(f"--pitch must be between 0.2 and 10 m, got {args.pitch:g}")
    if not 1 <= args.sets <= 1000:
        raise RigError(f"--sets must be between 1 and 1000, got {args.sets}")
    if not 1 <= args.in_flight <= 64:
        raise RigError(f"--in-flight must be between 1 and 64, got {args.in_flight}")
    if args.rate is not None and not args.rate > 0:
        raise RigError(f"--rate must be > 0 items per second, got {args.rate:g}")
    if not args.sweep_low > 0:
        raise RigError(f"--sweep-low must be > 0, got {args.sweep_low:g}")
    if args.sweep_high is not None and not args.sweep_high > args.sweep_low:
        raise RigError(f"--sweep-high ({args.sweep_high:g}) must be above --sweep-low ({args.sweep_low:g})")
    if not 0 <= args.settle_s <= 60:
        raise RigError(f"--settle-s must be between 0 and 60 s, got {args.settle_s:g}")
    if args.warmup_items < 0:
        raise RigError(f"--warmup-items must be 0 or more, got {args.warmup_items}")
    if args.sweep_items < 2:
        raise RigError(f"--sweep-items must be at least 2, got {args.sweep_items}")
    if not 0 <= args.sweep_steps <= 20:
        raise RigError(f"--sweep-steps must be between 0 and 20, got {args.sweep_steps}")
    if not args.model_seconds > 0:
        raise RigError(f"--model-seconds must be > 0, got {args.model_seconds:g}")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise RigError(f"--plot must name a .png file, got {args.plot}")
    for opt in ("json", "trace", "plot"):
        out = getattr(args, opt)
        if out and out != "-" and not Path(out).expanduser().resolve().parent.is_dir():
            raise RigError(f"--{opt} {out}: folder {Path(out).parent} does not exist")


def run(args) -> int:
    with text_to_stderr(args):
        return _bench(args)


def _bench(args) -> int:
    from ...tools.bench import driver, plot, trace
    from ..config import DEMO_CONFIG, check_config
    from ..pipeline.clock import STAGES

    _check(args)
    cfg = check_config(args.config or DEMO_CONFIG)
    if args.preprocess:
        cfg = driver.with_preprocess(cfg, args.preprocess)
    if args.capacity:
        return _capacity(args, cfg)
    report, final, points = driver.bench(
        cfg, items=args.items, rate=args.rate, sweep=args.sweep, sweep_low=args.sweep_low,
        sweep_high=args.sweep_high, sweep_steps=args.sweep_steps, sweep_items=args.sweep_items, seed=args.seed,
        warmup_items=args.warmup_items, settle_s=args.settle_s, pitch_m=args.pitch,
        model_seconds=args.model_seconds, progress=lambda m: print(f"rig bench: {m}", flush=True))
    print(format_report(report))
    if args.json:
        emit_json(report, args.json)
        print(f"rig bench: report -> {'stdout' if args.json == '-' else args.json}")
    if args.trace:
        trace.write_trace(args.trace, trace.chrome_trace(final.spans, final.item_intervals))
        print(f"rig bench: Chrome trace -> {args.trace} (open in chrome://tracing or ui.perfetto.dev)")
    if args.plot:
        plot.write_png(args.plot, plot.render(final.durations, final.latencies_ms, points, order=(*STAGES, *driver.DERIVED)))
        print(f"rig bench: plot -> {args.plot}")
    return 0


def _capacity(args, cfg) -> int:
    import json
    from pathlib import Path

    from ...tools.bench import capacity, plot, trace

    report = capacity.run_capacity(cfg, items=args.items, sets=args.sets, seed=args.seed,
                                   in_flight=args.in_flight, model_seconds=args.model_seconds,
                                   progress=lambda m: print(f"rig bench: {m}", flush=True))
    spans = report.pop("spans")
    print(format_capacity(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"rig bench: report -> {args.json}")
    if args.trace:
        trace.write_trace(args.trace, trace.chrome_trace(spans))
        print(f"rig bench: Chrome trace -> {args.trace} (open in chrome://tracing or ui.perfetto.dev)")
    if args.plot:
        durations: dict[str, list[float]] = {}
        for sp in spans:
            durations.setdefault(sp.stage, []).append((sp.end - sp.start) * 1000.0)
        plot.write_png(args.plot, plot.render(durations, [], (), order=capacity.CAPACITY_STAGES))
        print(f"rig bench: plot -> {args.plot}")
    return 0


def format_load(before: dict, during: dict) -> str:
    flag = "  ** LOADED: load average above the cores; figures are not a quiet machine's **" \
        if before["overloaded"] or during["overloaded"] else ""
    return (f"load average before {before['load_avg']}, during {during['load_avg']} on {before['cores']} "
            f"cores{flag}")


def format_threads(t: dict) -> str:
    return ("threads: " + ", ".join(f"{k} {v}" for k, v in t.items() if k != "stage_threads")
            + f"; stage threads {', '.join(t.get('stage_threads', []))}")


def format_capacity(r: dict) -> str:
    lines = [(f"capacity (closed loop, {r['items']} frame sets from a driver process, {r['scored']} scored, "
              f"{r['views_per_item']:g} views/item, batches median {r['batch']} of max {r['max_batch']})"),
             f"{'stage':<13}{'p50':>8}{'p99':>8}{'max':>8}  wall ms{'cpu/rec':>10}{'cpu/item':>10}  ms"]
    for name, p in r["stages"].items():
        cm = "-" if p["cpu_ms_mean"] is None else f"{p['cpu_ms_mean']:.2f}"
        ci = "-" if p["cpu_ms_per_item"] is None else f"{p['cpu_ms_per_item']:.2f}"
        lines.append(f"{name:<13}{p['p50_ms']:>8.2f}{p['p99_ms']:>8.2f}{p['max_ms']:>8.2f}         {cm:>10}{ci:>10}")
    e = r["end_to_end_ms"]
    lines.append(f"end-to-end (copy-in to decision) p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms; "
                 f"outcomes {r['outcomes']}")
    lines.append(f"capacity {r['capacity_items_per_s']:.2f} items/s vs model alone {r['model_only_items_per_s']:.2f} "
                 f"items/s at batch {r['batch']} -> {r['capacity_to_model']:.2f}; the rig's process got "
                 f"{r['cores_used']:.2f} cores on average (its CPU per item would allow "
                 f"{r['cpu_bound_items_per_s']:.1f} items/s on all cores)")
    lines.append(f"CPU per item: rig {r['rig_cpu_ms_per_item']:.1f} ms, model {r['model_cpu_ms_per_item']:.1f} ms "
                 f"(in the run {r['model_cpu_ms_per_item_in_run']:.1f}) -> {r['rig_to_model_cpu']}; stand-ins' "
                 f"share of the CPU {100 * r['stand_in_cpu_share']:.1f} %")
    lines.append("CPU by thread (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"]["threads_s"].items())
                 + "; stand-ins " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"]["stand_ins_s"].items()))
    lines.append(format_threads(r["threads"]))
    lines.append(format_load(r["load_before"], r["load_during"]))
    t = r["targets"]
    lines.append(f"targets: capacity >= 0.6 x model alone: {'met' if t['capacity_ge_0.6x_model'] else 'MISSED'}; "
                 f"rig CPU <= 0.67 x model's: {'met' if t['rig_cpu_le_0.67x_model'] else 'MISSED'}")
    return "\n".join(lines)


def format_report(r: dict) -> str:
    """The human table: one line per stage, then the totals and the targets."""
    head = (f"pipeline at {r['rate_items_per_s']:g} items/s (belt {r['belt_speed_mps']:g} m/s, pitch "
            f"{r['item_pitch_m']:g} m), {r['items']} items, {r['views_per_item']:g} views/item, "
            f"inference {r['inference']}")
    lines = [head,
             f"{'stage':<12}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  ms"]
    for name, p in list(r["stages"].items()) + [("end-to-end", r["end_to_end_ms"])]:
        lines.append(f"{name:<12}{p['p50_ms']:>9.2f}{p['p95_ms']:>9.2f}{p['p99_ms']:>9.2f}{p['max_ms']:>9.2f}")
    if r["stages_not_seen"]:
        lines.append(f"(no samples: {', '.join(r['stages_not_seen'])})")
    s = r["slack_ms"]
    lines.append(f"gate time {r['gate_time_ms']:.0f} ms; slack at the gate min {s['min_ms']:.1f} ms, "
                 f"p1 {s['p1_ms']:.1f} ms, p50 {s['p50_ms']:.1f} ms")
    st = r["startup"]
    lines.append(f"start-up (first {st['settle_s']:g} s, not in the figures above): {st['items']} items, "
                 f"outcomes {st['outcomes'] or '-'}, max latency {st['max_latency_ms']:.0f} ms")
    lines.append(f"late {r['late']}, fail-safe {r['failsafe']} {r['failsafe_reasons'] or ''}, "
                 f"overload {r['overload']}, "
                 f"missed by the trigger {r['missed_at_start']} at the start and {r['missed_later']} later "
                 f"of {r['items_on_belt']}, "
                 f"dropped frames {r['dropped_frames']}; batches median {r['batch_size']['median']}")
    lines.append(f"throughput {r['throughput_items_per_s']:.2f} items/s; pipeline capacity "
                 f"{r['pipeline_capacity_items_per_s']:.2f} items/s vs model alone "
                 f"{r['model_only_items_per_s']:.2f} items/s at batch {r['model_only']['batch']} "
                 f"-> ratio {r['pipeline_to_model_ratio']:.2f}"
                 + ("" if r["saturated"] else " (no run saturated the pipeline: capacity is a lower bound)"))
    if "max_rate_items_per_s" in r:
        lines.append(f"max rate with no late decision: {r['max_rate_items_per_s']:.2f} items/s")
    if r.get("stage_cpu_ms"):
        lines.append("thread CPU per item (ms): " + ", ".join(f"{k} {v['per_item']:.1f}"
                                                             for k, v in r["stage_cpu_ms"].items()))
    if r.get("cpu_s"):
        lines.append("CPU by thread (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"]["threads_s"].items())
                     + "; stand-ins " + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_s"]["stand_ins_s"].items()))
    if r.get("threads"):
        lines.append(format_threads(r["threads"]))
    if r.get("load"):
        lines.append(format_load(r["load"]["before"], r["load"]["during"]))
    t = r["targets"]
    ok = {True: "met", False: "MISSED"}
    lines.append(f"targets at {t['p99_at']}: p99 <= 2 x p50: {ok[t['p99_le_2x_p50']]}; p99 <= 100 ms: "
                 f"{ok[t['p99_le_100ms']]}; every item decided, none late or failed safe: "
                 f"{ok[t['all_decided_none_late_none_failsafe']]}")
    return "\n".join(lines)
