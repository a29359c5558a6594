"""Drive the real pipeline at a chosen item rate and measure where the time goes.

``run_at_rate`` opens the rig with :func:`damage_rig.rig.service.assemble.open_rig` —
the code `rig run` runs — on the simulated belt, with the belt speed set so
that ``rate = speed / pitch``, runs it until every item is decided, and
collects the StageClock's per-stage durations and spans, each item's
end-to-end latency and its slack at the gate. ``model_alone`` times the same
inference backend on already-preprocessed batches, with no pipeline around
it. ``bench`` puts them together into the report `rig bench` prints.

Rates: the simulator's items are up to ~0.35 m long, so the pitch is kept at
``MIN_PITCH_M`` or more and a higher rate means a faster belt; the gate
distance stays, so the deadline shrinks as on a real line.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...rig.config import RigConfig
from ...rig.foundation.errors import ConfigError, RigError
from ...rig.pipeline.clock import STAGES, StageClock, percentiles
from ...rig.service.assemble import load_scorer, open_rig
from ...rig.service.loop import serve
from .cpu import CpuMeter, load_state
from .nvtx import NvtxBackend, NvtxPreprocessor, available, nvtx_range
from .sweep import SweepPoint, find_max_rate

log = logging.getLogger(__name__)

MIN_PITCH_M = 0.4
SETTLE_S = 2.0  # the first seconds of a run are start-up, reported apart
# waits the pipeline does not record as stages, derived per item from its timestamps and spans:
# trigger_hold = best frame's exposure -> the trigger releases the item (it must pass the centre first),
# capture_queue = released -> preprocessing starts (waiting in the capture queue)
DERIVED = ("trigger_hold", "capture_queue")
FOUR = ("p50_ms", "p95_ms", "p99_ms", "max_ms")


def four(p: dict) -> dict:
    """The four figures the report shows, from a :func:`percentiles` dict."""
    return {k: p[k] for k in FOUR}


def config_at_rate(cfg, rate: float, min_pitch_m: float = MIN_PITCH_M, pitch_m: float | None = None):
    """A copy of ``cfg`` whose belt brings ``rate`` items per second (pitch kept >= min_pitch_m, or
    exactly ``pitch_m`` when given)."""
    from pydantic import ValidationError


    if not rate > 0:
        raise RigError(f"item rate must be > 0 items/s, got {rate}")
    pitch = pitch_m if pitch_m is not None else max(cfg.belt.item_pitch_m, min_pitch_m)
    speed = rate * pitch
    data = cfg.model_dump()
    data["belt"].update(speed_mps=speed, item_pitch_m=pitch)
    try:
        out = RigConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RigError(f"{rate:g} items/s at a {pitch:g} m pitch needs a belt at {speed:.2f} m/s, which the "
                       f"config does not allow ({'.'.join(map(str, first['loc']))}: {first['msg']}); "
                       "choose a lower rate") from None
    return out.model_copy(update={"source_path": cfg.source_path})


def with_preprocess(cfg, backend: str):
    """A copy of ``cfg`` whose preprocessing runs on ``backend``; RigError naming the choices otherwise."""
    from pydantic import ValidationError

    data = cfg.model_dump()
    data["preprocess"]["backend"] = backend
    try:
        out = RigConfig.model_validate(data)
    except ValidationError as exc:
        raise RigError(f"--preprocess {backend}: {exc.errors()[0]['msg']}") from None
    return out.model_copy(update={"source_path": cfg.source_path})


@dataclass
class RunResult:
    """One pipeline run at one rate."""

    rate: float
    speed_mps: float
    pitch_m: float
    n_items: int
    summary: dict                      # Rig.summary() of the whole run, start-up included
    counts: dict                       # steady state: items, late, failsafe, overload, undecided
    durations: dict[str, list[float]]  # stage -> ms
    latencies_ms: list[float]          # end-to-end, capture to decision, every decided item
    slack_ms: list[float]              # deadline (item at the gate) minus decision time
    scored: int                        # items decided from their score
    views_per_item: float
    batch_sizes: list[int]
    throughput: float                  # items scored per second of run
    spans: list = field(default_factory=list)
    item_intervals: list = field(default_factory=list)
    gate_time_ms: float = 0.0
    seen: list[int] = field(default_factory=list)  # belt indexes of the items the trigger captured
    failsafe_reasons: dict[str, int] = field(default_factory=dict)  # reason -> items decided without a score
    startup: dict = field(default_factory=dict)  # the items of the first settle_s seconds, counted apart
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # stage -> thread CPU ms per record (steady)
    cpu: dict = field(default_factory=dict)  # CpuMeter.delta over the run: by thread, stand-ins
    threads: dict = field(default_factory=dict)  # the thread settings in force
    load: dict = field(default_factory=dict)  # load average before and during

    @property
    def missed_at_start(self) -> int:
        """Belt items before the first one captured: the rig's start-up blind time, not its load."""
        return min(self.seen) if self.seen else self.n_items

    @property
    def missed_later(self) -> int:
        """Belt items after the first captured one that were never captured: a real miss."""
        return self.n_items - self.missed_at_start - len(set(self.seen))

    @property
    def ok(self) -> bool:
        """Sustained: none late, failed safe or undecided, every item after the first captured one
        captured and scored, and at least half of the belt seen."""
        c = self.counts
        return (c["late"] == 0 and c["failsafe"] == 0 and c["overload"] == 0 and c["undecided"] == 0
                and self.missed_later == 0 and self.scored == c["items"] and 2 * len(self.seen) >= self.n_items)

    def point(self) -> SweepPoint:
        p = percentiles(self.latencies_ms)
        return SweepPoint(self.rate, self.ok, p["p50_ms"], p["p99_ms"], self.counts["late"],
                          self.counts["failsafe"],
                          {"throughput_items_per_s": round(self.throughput, 3), "items": self.counts["items"],
                           "missed_at_start": self.missed_at_start, "missed_later": self.missed_later,
                           "failsafe_reasons": self.failsafe_reasons, "startup": self.startup,
                           "dropped_frames": self.summary["dropped_frames"]})


def batch_views(spans, views_of: dict[int, int]) -> list[int]:
    """Views per batch the infer thread ran: one batch_wait span per item, all of a batch ending when it
    starts; ``views_of`` maps item numbers to their views."""
    per: Counter = Counter()
    for s in spans:
        if s.stage == "batch_wait":
            per[(s.thread, s.end)] += views_of.get(s.item, 1)
    return list(per.values())


def _derived_waits(items, spans) -> dict[str, list[float]]:
    """trigger_hold and capture_queue (ms) per item; see DERIVED."""
    prep_start = {s.item: s.start for s in spans if s.stage == "preprocess" and s.item is not None}
    hold = [(it.capture.triggered_at - it.capture.host_time) * 1000.0 for it in items]
    queued = [(prep_start[it.no] - it.capture.triggered_at) * 1000.0 for it in items if it.no in prep_start]
    return {"trigger_hold": hold, "capture_queue": queued}


def warm_up(backend, max_batch: int, channels: int, size: int) -> None:
    """Run every batch size once, so first-call allocations and per-shape plans stay out of the figures."""
    x = np.zeros((max_batch, channels, size, size), np.float32)
    for n in range(1, max_batch + 1):
        backend.run(x[:n])


def run_at_rate(cfg, rate: float, items: int, *, scorer=None, seed: int = 1, damage_rate: float = 0.2,
                state_dir: Path | None = None, keep_spans: bool = True, extra_s: float = 30.0,
                settle_s: float = SETTLE_S, separate_process: bool = True,
                pitch_m: float | None = None) -> RunResult:
    """Run the rig from ``cfg`` on a simulated belt of ``items`` items arriving at ``rate`` per second.

    The simulated cameras render in a driver process of their own and deliver
    through shared memory (``separate_process``; tools/sim/remote.py), so the
    rig's figures and CPU are its own. Figures describe the steady state: items exposed in the first ``settle_s``
    seconds of the belt, and stage records that start then, are counted apart
    (``startup``) — a freshly started rig misses or fails safe on its first items
    while cameras and threads come up, which is start-up, not load.
    """
    if items < 1:
        raise RigError(f"the bench needs at least 1 item, got {items}")
    if not any(c.source == "sim" for c in cfg.cameras):
        raise ConfigError("rig bench drives the simulated belt: the config needs cameras with source 'sim'",
                          [f"{cfg.source_path}: cameras: no camera has source: sim"])
    rcfg = config_at_rate(cfg, rate, pitch_m=pitch_m)
    clock = StageClock(keep_spans=True)  # the spans give the steady-state durations
    state = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="damage-rig-bench-"))
    rcfg = rcfg.with_state_dir(state).with_sim(items=items, seed=seed, damage_rate=damage_rate,
                                               separate_process=separate_process)
    handle = open_rig(rcfg, clock=clock, with_events=False, scorer=scorer, keep_items=True)
    stand_ins = {"controller_emulator": handle.emulator.pid} if handle.emulator is not None else {}
    if getattr(handle.sources.groups["sim"].state, "pid", None):
        stand_ins["sim_cameras"] = handle.sources.groups["sim"].state.pid
    meter = CpuMeter(stand_ins)
    load_before = load_state()
    try:
        belt = handle.sources.groups["sim"].state
        if handle.rig.pre.name == "cuda" and available():
            handle.rig.pre = NvtxPreprocessor(handle.rig.pre)
        belt_s = (belt.end_time or 0.0) + 2.0
        a = meter.snapshot()
        cpu_run: dict = {}  # taken as the loop ends, while the stage threads still run

        def take_cpu() -> None:
            cpu_run.update(CpuMeter.delta(a, meter.snapshot()))

        serve(handle, max_s=belt_s + extra_s, on_stopping=take_cpu)
        rig = handle.rig
        summary = rig.summary()
        load_during = load_state()
        t_settle = belt.start + settle_s
        its = rig.items_snapshot()
    finally:
        handle.close()
    startup = [it for it in its if it.capture.host_time < t_settle]
    steady = [it for it in its if it.capture.host_time >= t_settle]
    decided = [it for it in steady if it.decided]
    scored = [it for it in decided if it.reason == "score"]
    spans = [s for s in clock.spans if s.start >= t_settle]
    late = sum(1 for it in decided if it.reason == "late" or getattr(it.result, "late", False))
    counts = {"items": len(steady), "late": late,
              "failsafe": sum(1 for it in decided if it.reason not in ("score", "late")),
              "overload": sum(1 for it in decided if it.reason == "overload"),
              "undecided": len(steady) - len(decided)}
    # items scored per second between the first and the last score (n - 1 intervals): the arrival rate
    # below capacity, the pipeline's service rate when saturated
    t_scores = sorted(it.decided_at for it in scored)
    throughput = (len(t_scores) - 1) / (t_scores[-1] - t_scores[0]) \
        if len(t_scores) > 1 and t_scores[-1] > t_scores[0] else 0.0
    durations: dict[str, list[float]] = {}
    for sp in spans:
        durations.setdefault(sp.stage, []).append((sp.end - sp.start) * 1000.0)
    durations.update(_derived_waits(steady, spans))
    cpu_ms: dict[str, list[float]] = {}
    for sp in spans:
        if sp.cpu_s is not None:
            cpu_ms.setdefault(sp.stage, []).append(sp.cpu_s * 1000.0)
    return RunResult(
        rate=rate, speed_mps=rcfg.belt.speed_mps, pitch_m=rcfg.belt.item_pitch_m, n_items=items, summary=summary,
        counts=counts, durations=durations,
        latencies_ms=[(it.decided_at - it.capture.host_time) * 1000.0 for it in decided],
        slack_ms=[(it.deadline - it.decided_at) * 1000.0 for it in decided],
        scored=len(scored),
        views_per_item=statistics.fmean([it.expected for it in scored]) if scored else float(len(cfg.cameras)),
        batch_sizes=batch_views(spans, {it.no: it.expected for it in its}), throughput=throughput,
        spans=spans if keep_spans else [], cpu_ms=cpu_ms, cpu=cpu_run, threads=dict(handle.threads),
        load={"before": load_before, "during": load_during},
        item_intervals=[(it.no, it.capture.host_time, it.decided_at, f"{it.decision} ({it.reason})")
                        for it in decided] if keep_spans else [],
        gate_time_ms=1000.0 * rcfg.belt.gate_distance_m / rcfg.belt.speed_mps,
        seen=sorted(it.truth["index"] for it in its if it.truth and "index" in it.truth),
        failsafe_reasons=dict(Counter(it.reason for it in decided if it.reason != "score")),
        startup={"items": len(startup), "settle_s": settle_s,
                 "outcomes": dict(Counter(it.reason for it in startup if it.decided)),
                 "max_latency_ms": round(max(((it.decided_at - it.capture.host_time) * 1000.0
                                              for it in startup if it.decided), default=0.0), 1)})


def model_alone(backend, batch: int, channels: int, size: int, *, seconds: float = 3.0, min_runs: int = 5,
                seed: int = 0) -> dict:
    """The inference backend alone on an already-preprocessed (batch, C, S, S) tensor, run back to back."""
    x = np.random.default_rng(seed).standard_normal((batch, channels, size, size)).astype(np.float32)
    backend.run(x)  # warm-up: first-run allocations and lazy initialisation
    times = []
    t_end = time.monotonic() + seconds
    while len(times) < min_runs or time.monotonic() < t_end:
        t0 = time.monotonic()
        with nvtx_range(f"model_alone[{batch}]"):
            backend.run(x)
        times.append((time.monotonic() - t0) * 1000.0)
    total_s = sum(times) / 1000.0
    return {"batch": batch, "runs": len(times), "batch_ms": four(percentiles(times)),
            "images_per_s": round(batch * len(times) / total_s, 2)}


def run_report(r: RunResult) -> dict:
    """The per-run part of the report: stages, end-to-end, slack, drops (steady state; ``startup`` apart)."""
    stages = {s: four(percentiles(r.durations[s])) for s in (*STAGES, *DERIVED) if r.durations.get(s)}
    stages.update({s: four(percentiles(v)) for s, v in r.durations.items() if s not in stages and v})
    sl = np.asarray(r.slack_ms, float)
    s, c = r.summary, r.counts
    return {
        "rate_items_per_s": round(r.rate, 3), "belt_speed_mps": round(r.speed_mps, 3), "item_pitch_m": r.pitch_m,
        "items": c["items"], "items_on_belt": r.n_items, "startup": r.startup, "missed_at_start": r.missed_at_start,
        "missed_later": r.missed_later,
        "scored": r.scored,
        "stages": stages, "stage_counts": {k: len(v) for k, v in r.durations.items()},
        "stages_not_seen": [st for st in STAGES if not r.durations.get(st)],
        "end_to_end_ms": four(percentiles(r.latencies_ms)),
        "gate_time_ms": round(r.gate_time_ms, 1),
        "slack_ms": {"min_ms": round(float(sl.min()), 3) if sl.size else 0.0,
                     "p1_ms": round(float(np.percentile(sl, 1)), 3) if sl.size else 0.0,
                     "p50_ms": round(float(np.percentile(sl, 50)), 3) if sl.size else 0.0},
        "throughput_items_per_s": round(r.throughput, 3),
        "late": c["late"], "dropped_frames": s["dropped_frames"], "failsafe": c["failsafe"],
        "overload": c["overload"], "stage_errors": s["stage_errors"], "failsafe_reasons": r.failsafe_reasons,
        "views_per_item": round(r.views_per_item, 3),
        "stage_cpu_ms": {st: {"mean": round(statistics.fmean(v), 3), "per_item": round(sum(v) / max(r.scored, 1), 3)}
                         for st, v in r.cpu_ms.items() if v},
        "cpu_s": r.cpu, "threads": r.threads, "load": r.load,
        "overloaded": bool(r.load) and (r.load["before"]["overloaded"] or r.load["during"]["overloaded"]),
        "batch_size": {"median": statistics.median(r.batch_sizes) if r.batch_sizes else 0,
                       "max": max(r.batch_sizes, default=0), "batches": len(r.batch_sizes)},
    }


def bench(cfg, *, items: int = 30, rate: float | None = None, sweep: bool = False, sweep_low: float = 0.5,
          sweep_high: float | None = None, sweep_steps: int = 4, sweep_items: int = 15, seed: int = 1,
          model_seconds: float = 3.0, warmup_items: int = 3, settle_s: float = SETTLE_S, scorer=None,
          progress=None, pitch_m: float | None = None) -> tuple[dict, RunResult, list[SweepPoint]]:
    """The whole `rig bench`: (report dict, the reported run, the sweep points).

    Without ``sweep`` the pipeline runs once at ``rate`` (default: the
    config's belt speed / pitch). With ``sweep`` it finds the highest rate with
    no late decision, then runs once more at 80 % of it: that run is the one
    reported (stages, end-to-end, trace). Then the model runs alone.
    """
    say = progress or (lambda msg: None)
    if scorer is None:
        scorer = load_scorer(cfg)
    wrap_gpu_path(scorer)
    say("warming up the inference backend ...")
    warm_up(scorer.backend, cfg.inference.max_batch, scorer.channels, scorer.input_size)
    if warmup_items:
        # a short discarded run: the first item through a fresh process pays one-off costs (imports,
        # first calls, caches) that are start-up, not the steady state the percentiles describe
        say(f"warm-up run ({warmup_items} items, discarded) ...")
        run_at_rate(cfg, sweep_low if sweep else (rate or 1.0), warmup_items, scorer=scorer, seed=seed + 1000,
                    keep_spans=False, pitch_m=pitch_m)
    runs: list[RunResult] = []

    def measure(r: float, n: int = sweep_items if sweep else items) -> SweepPoint:
        say(f"pipeline at {r:.2f} items/s ({n} items) ...")
        res = run_at_rate(cfg, r, n, scorer=scorer, seed=seed, settle_s=settle_s, pitch_m=pitch_m)
        runs.append(res)
        pt = res.point()
        say(f"  {'ok' if pt.ok else 'NOT sustained'}: p50 {pt.p50_ms:.1f} ms, p99 {pt.p99_ms:.1f} ms, "
            f"{pt.late} late, {pt.failsafe} fail-safe, missed by the trigger {pt.detail['missed_at_start']} at "
            f"the start and {pt.detail['missed_later']} later, "
            + (f"fail-safe reasons {pt.detail['failsafe_reasons']}, " if pt.detail["failsafe_reasons"] else "")
            + f"{res.throughput:.2f} items/s scored")
        return pt

    points: list[SweepPoint] = []
    report: dict = {}
    if sweep:
        hi = sweep_high if sweep_high is not None else 10.0 / max(cfg.belt.item_pitch_m, MIN_PITCH_M)
        res = find_max_rate(measure, sweep_low, hi, max_steps=sweep_steps)
        points = res.curve()
        report["max_rate_items_per_s"] = round(res.max_rate, 3)
        report["sweep"] = [p.as_dict() for p in points]
        if res.max_rate <= 0:
            raise RigError(f"the pipeline did not sustain even {sweep_low:g} items/s; lower --sweep-low "
                           "or look at the stage figures with --rate")
        say("the reported run, at 80 % of the max rate:")
        measure(0.8 * res.max_rate, items)
        final = runs[-1]
    else:
        r = rate if rate is not None else (cfg.belt.speed_mps or 0.5) / max(cfg.belt.item_pitch_m, MIN_PITCH_M)
        measure(r)
        final = runs[-1]
    report.update(run_report(final))
    say(f"model alone: batches of {cfg.inference.max_batch} for {model_seconds:g} s ...")
    alone = model_alone(scorer.backend, cfg.inference.max_batch, scorer.channels, scorer.input_size,
                        seconds=model_seconds)
    report["model_only"] = alone
    report["model_only_items_per_s"] = round(alone["images_per_s"] / max(final.views_per_item, 1e-9), 3)
    med = int(report["batch_size"]["median"] or 1)
    if med != cfg.inference.max_batch:
        a2 = model_alone(scorer.backend, med, scorer.channels, scorer.input_size, seconds=min(model_seconds, 1.5))
        report["model_only_at_pipeline_batch"] = a2
    # capacity: the most items per second the pipeline scored in any run of this bench (a saturated
    # run scores as fast as it can; a run below capacity scores at the arrival rate)
    all_runs = runs
    capacity = max(r.throughput for r in all_runs)
    report["pipeline_capacity_items_per_s"] = round(capacity, 3)
    report["pipeline_to_model_ratio"] = round(capacity / report["model_only_items_per_s"], 3) \
        if report["model_only_items_per_s"] else 0.0
    report["saturated"] = any(not r.ok for r in all_runs)
    report["inference"] = scorer.backend.describe()
    report["cameras"] = [c.name for c in cfg.cameras]
    p = report["end_to_end_ms"]
    report["targets"] = {
        "p99_le_2x_p50": (p["p99_ms"] <= 2 * p["p50_ms"]) if p["p50_ms"] else False,
        "p99_le_100ms": 0 < p["p99_ms"] <= 100.0,
        "p99_at": "80 % of the max rate" if sweep else f"{final.rate:g} items/s (no sweep)",
        "all_decided_none_late_none_failsafe": (final.ok and report["late"] == 0 and report["failsafe"] == 0),
    }
    return report, final, points


def wrap_gpu_path(scorer) -> None:
    """NVTX ranges around inference when it runs on the GPU (no-op elsewhere or without NVTX)."""
    backend = scorer.backend
    if getattr(backend, "name", "") == "tensorrt" and available() and not isinstance(backend, NvtxBackend):
        scorer.backend = NvtxBackend(backend)
