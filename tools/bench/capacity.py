"""`rig bench --capacity`: the most items per second the rig scores, and what each costs it.

Closed loop: cached frame sets (frames.py) come from the stand-in driver
process through shared memory; the host copies each into its frame rings (what
a camera costs it), the trigger's blob analysis runs on the trigger camera's
depth, and the capture goes to the rig's admission as soon as the pipeline
has room. Everything
after admission is the rig `rig run` runs (``open_rig``): ROI alignment and the
fused preprocessing, batching, inference, scoring in its own thread, the
decision and the divert link to the controller emulator. The loop keeps at
most ``in_flight`` items undecided (enough to keep preparation, inference and
scoring busy at once, few enough that none waits long).

Reported next to it, in the same process and run: the model alone at the
batch size the run used and the same thread settings. CPU is accounted per
thread (cpu.py): the rig's own CPU per item is the process's CPU minus the
inference's (the infer thread inside the backend, and the backend's native
threads); the stand-ins' share is the frame server's and the emulator's.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ...calibration.model import load_calibration
from ...rig.capture.base import FrameRef, FrameRing
from ...rig.foundation.errors import RigError
from ...rig.foundation.threads import freeze_heap
from ...rig.pipeline.clock import StageClock, percentiles
from ...rig.pipeline.items import LATENCY_WINDOW
from ...rig.service.assemble import load_scorer, open_rig
from ...rig.trigger import Capture
from .cpu import CpuMeter, account, load_state
from .driver import batch_views, model_alone, warm_up
from .frames import FrameServer, frame_sets

log = logging.getLogger(__name__)

SPAN_ITEMS = 5000  # longer runs keep rolling windows and no spans (no trace), as a service does
CAPACITY_STAGES = ("capture_copy", "trigger", "preprocess", "batch_wait", "infer", "identify", "anomaly", "fuse",
                   "divert_send")


def _wait_for_room(rig, in_flight: int, give_up_at: float) -> None:
    """Closed loop: the next frame set goes in once fewer than ``in_flight`` items are undecided."""
    while rig.ledger.in_flight() >= in_flight:
        if time.monotonic() > give_up_at:
            raise RigError("the pipeline accepted no item for 30 s")
        time.sleep(0.0005)


def inject(rig, server: FrameServer, rings: dict, trigger_camera: str, items: int, clock: StageClock,
           in_flight: int = 4) -> dict:
    """Deliver ``items`` frame sets into the rig, closed loop; returns what happened to them."""
    cams = list(rings)
    skipped = 0
    rss: dict[int, float] = {}  # items injected -> resident memory (MB)
    marks = {items // 20, items, *range(1000, items + 1, 1000)}
    server.request(0, 0)
    for n in range(items):
        slot = server.wait()
        if n + 1 < items:
            server.request(n + 1, (slot + 1) % server.slots)  # the driver fills the next slot meanwhile
        _wait_for_room(rig, in_flight, time.monotonic() + 30.0)
        t0, c0 = time.monotonic(), time.thread_time()
        refs = {}
        for cam in cams:
            ring = rings[cam]
            s = ring.acquire()
            while s is None:  # every slot still held by items in flight
                time.sleep(0.0005)
                s = ring.acquire()
            np.copyto(ring.color[s], server.views[slot][cam]["color"])
            np.copyto(ring.depth[s], server.views[slot][cam]["depth"])
            refs[cam] = FrameRef(cam, ring, s, t0 * 1000.0, n, t0)
        t1, c1 = time.monotonic(), time.thread_time()
        clock.add("capture_copy", t0, t1, n, cpu_s=c1 - c0)
        blobs = rig.sync_trigger.trigger.blobs(refs[trigger_camera].depth)
        clock.add("trigger", t1, time.monotonic(), n, cpu_s=time.thread_time() - c1)
        if not blobs:
            skipped += 1
            for r in refs.values():
                r.release()
            continue
        blob = min(blobs, key=lambda b: abs(b.x))
        rig.admission(Capture(n, refs, blob, t0, t0 * 1000.0, time.monotonic()))
        if n + 1 in marks:
            rss[n + 1] = rss_mb()
    return {"injected": items, "no_blob": skipped, "rss_mb": rss}


class Outcomes:
    """A decision sink (rig/pipeline/observe.py) keeping what the capacity figures need of each
    decided item in arrays sized once, so the rig itself keeps no item (as `rig run` does) and a
    long run's memory shows the rig's own growth, not the bench's."""

    def __init__(self, items: int):
        self.decided_at = np.zeros(items + 64, np.float64)
        self.latency_ms = np.zeros(items + 64, np.float32)
        self.views = np.zeros(items + 64, np.int8)
        self.reasons: Counter = Counter()
        self.scored = np.zeros(items + 64, bool)
        self.n = 0
        self.views_of: dict[int, int] = {}  # item no -> views, for the batch sizes (short runs only)
        self.track_views = items <= SPAN_ITEMS
        self._lock = threading.Lock()

    def decision(self, item, latency_ms: float) -> None:
        with self._lock:
            k = self.n
            if k >= len(self.decided_at):
                return
            self.n += 1
            self.decided_at[k], self.latency_ms[k], self.views[k] = item.decided_at, latency_ms, item.expected
            self.scored[k] = item.reason == "score"
            self.reasons[item.reason] += 1
            if self.track_views:
                self.views_of[item.no] = item.expected

    def divert_result(self, item, result) -> None:
        pass


def rss_mb() -> float:
    """This process's resident memory (MB), from /proc/self/status; 0 where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return 0.0


def run_capacity(cfg, *, items: int = 200, sets: int = 40, seed: int = 1, damage_rate: float = 0.2,
                 in_flight: int = 4, model_seconds: float = 3.0, scorer=None, progress=None) -> dict:
    """The capacity report (see the module docstring)."""
    say = progress or (lambda msg: None)
    if items < 2:
        raise RigError(f"--items must be at least 2 for a capacity run, got {items}")
    if not 1 <= sets <= 1000:
        raise RigError(f"the capacity run cycles through 1..1000 cached frame sets, got {sets}")
    if in_flight < 1:
        raise RigError(f"in_flight must be at least 1, got {in_flight}")
    calib = load_calibration(cfg.calibration_path)
    folder = frame_sets(cfg, calib, sets, seed=seed, damage_rate=damage_rate, progress=say)
    if scorer is None:
        scorer = load_scorer(cfg)
    state = Path(tempfile.mkdtemp(prefix="damage-rig-capacity-"))
    ccfg = cfg.with_state_dir(state).with_sim(items=1, seed=seed, damage_rate=damage_rate)
    # a long run keeps rolling windows, as `rig run` does, so its memory is the rig's own
    long_run = items > SPAN_ITEMS
    clock = StageClock(keep_spans=not long_run, window=LATENCY_WINDOW if long_run else None)
    outcomes = Outcomes(items)
    say("starting the frame server (another process, shared memory) ...")
    server = FrameServer(folder)
    handle = None
    try:
        handle = open_rig(ccfg, clock=clock, with_events=False, scorer=scorer, keep_items=False)
        if handle.sources is not None:
            handle.sources.close()  # the rig's own (simulated) cameras stay off: the frame server delivers
        rig = handle.rig
        rig.admission.truth_fn = None
        rig.sinks.append(outcomes)
        trig_cam = rig.sync_trigger.trigger_camera
        rings = {}
        for c in cfg.cameras:
            cam = calib.camera(c.name)
            depth_size = tuple(cam.depth.size) if cam.depth else tuple(cam.size)
            rings[c.name] = FrameRing(in_flight + 8, tuple(cam.size), depth_size)
        # the ring's shapes must be the cached frames' (a different resolution means a stale cache)
        for cam, cs, ds in zip(server.layout.cameras, server.layout.color_shapes, server.layout.depth_shapes):
            if rings[cam].color.shape[1:] != cs or rings[cam].depth.shape[1:] != ds:
                raise RigError(f"camera {cam}: cached frames are {cs}/{ds}, the calibration says "
                               f"{rings[cam].color.shape[1:]}/{rings[cam].depth.shape[1:]}")
        handle.threads["gc_frozen_objects"] = freeze_heap()
        # every batch size once before measuring: first-call allocations (ONNX Runtime's arena grows
        # per new shape) are start-up, not the run's, as in `--rate` runs
        warm_up(scorer.backend, cfg.inference.max_batch, scorer.channels, scorer.input_size)
        rig.start(capture=False)
        stand_ins = {"frame_server": server.pid}
        if handle.emulator is not None:
            stand_ins["controller_emulator"] = handle.emulator.pid
        meter = CpuMeter(stand_ins)
        load_before = load_state()
        say(f"capacity: {items} frame sets, closed loop ({in_flight} undecided at most) ...")
        a = meter.snapshot()
        fed = inject(rig, server, rings, trig_cam, items, clock, in_flight)
        t_end = time.monotonic() + 30.0
        while not rig.idle() and time.monotonic() < t_end:
            time.sleep(0.002)
        b = meter.snapshot()
        load_during = load_state()
        threads = dict(handle.threads)
    finally:
        if handle is not None:
            if handle.rig.ready.is_set():
                handle.rig.stop(timeout=5.0)
            handle.close()
        gc.unfreeze()
        server.close()
    run = CpuMeter.delta(a, b)
    n = outcomes.n
    scored = np.sort(outcomes.decided_at[:n][outcomes.scored[:n]])
    if len(scored) < 2:
        raise RigError(f"the capacity run scored {len(scored)} items of {items}; see the log")
    capacity = (len(scored) - 1) / (scored[-1] - scored[0]) if scored[-1] > scored[0] else 0.0
    seen = outcomes.views[:n][outcomes.views[:n] > 0]
    views = float(seen.mean()) if seen.size else 1.0
    if outcomes.track_views:
        batches = batch_views(clock.spans, outcomes.views_of)
        batch = round(statistics.median(batches)) if batches else 1
    else:  # no spans kept: the mean batch, views over batches run
        batch = max(1, round(float(seen.sum()) / max(clock.counts.get("infer", 1), 1)))
    # the model alone: same backend, same threads, the batch size the run used, back to back
    say(f"model alone at batch {batch} for {model_seconds:g} s ...")
    ma = meter.snapshot()
    alone = model_alone(scorer.backend, batch, scorer.channels, scorer.input_size, seconds=model_seconds)
    mb = meter.snapshot()
    alone_cpu = CpuMeter.delta(ma, mb)["process_s"]
    alone_items = alone["runs"] * batch / views  # items' worth of views the model ran
    infer_cpu = clock.cpu_total_ms.get("infer", 0.0) / 1000.0
    model_in_run = infer_cpu + run["threads_s"].get("native", 0.0)
    acc = account(run["process_s"], model_in_run, sum(run["stand_ins_s"].values()), len(scored), alone_cpu,
                  alone_items)
    model_items_per_s = alone["images_per_s"] / views
    stages = {}
    for st in CAPACITY_STAGES:
        wall = clock.durations.get(st)
        if not wall:
            continue
        total = clock.cpu_total_ms.get(st)
        stages[st] = {**{k: v for k, v in percentiles(wall).items() if k != "n"}, "n": clock.counts[st],
                      "cpu_ms_mean": round(total / clock.counts[st], 3) if total is not None else None,
                      "cpu_ms_per_item": round(total / len(scored), 3) if total is not None else None}
    lat = outcomes.latency_ms[:n]
    report = {
        "mode": "capacity",
        "capacity_items_per_s": round(capacity, 3),
        "model_only_items_per_s": round(model_items_per_s, 3),
        "capacity_to_model": round(capacity / model_items_per_s, 3) if model_items_per_s else 0.0,
        # what the CPU allowed: the cores the rig's process got on average, and the rate its CPU per
        # item would allow on every core of the machine (a loaded machine's capacity is its share's)
        "cores_used": round(run["process_s"] / run["wall_s"], 3) if run["wall_s"] > 0 else 0.0,
        "cpu_bound_items_per_s": round((os.cpu_count() or 1) * len(scored) / run["process_s"], 3)
        if run["process_s"] > 0 else 0.0,
        **acc,
        "batch": batch, "max_batch": cfg.inference.max_batch, "views_per_item": round(views, 3),
        "threads": threads,
        "items": items, "scored": len(scored), "frame_sets": sets, "in_flight": in_flight,
        "outcomes": dict(outcomes.reasons), "injection": fed,
        "stages": stages, "end_to_end_ms": {k: v for k, v in percentiles(lat).items() if k != "n"},
        "cpu_s": run, "model_only": {**alone, "cpu_s": round(alone_cpu, 3)},
        "load_before": load_before, "load_during": load_during,
        "overloaded": load_before["overloaded"] or load_during["overloaded"],
    }
    report["targets"] = {"capacity_ge_0.6x_model": capacity >= 0.6 * model_items_per_s,
                         "rig_cpu_le_0.67x_model": acc["rig_cpu_ms_per_item"] <= 0.67 * acc["model_cpu_ms_per_item"]}
    report["spans"] = clock.spans
    return report
