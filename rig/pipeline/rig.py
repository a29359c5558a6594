"""``Rig``: the stages of the pipeline wired together, their threads, and the rig's figures.

Built by :func:`damage_rig.rig.service.assemble.open_rig` from the config (or
with stand-in parts by tests and the bench), started, stopped gracefully.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from ...calibration.model import Calibration
from ..capture.base import CameraWorker
from ..capture.sync import FrameSync
from ..config import RigConfig
from ..divert.base import DivertLink
from ..events import EventLog
from ..foundation.item_ids import ItemIds
from ..preprocess.base import Preprocessor
from ..trigger import Trigger
from .batch_infer import BatchInfer
from .clock import StageClock, percentiles
from .deadline import Deadlines
from .decide import Decide
from .dispatch import Dispatch
from .items import LATENCY_WINDOW, ItemScorer, ItemState, Ledger
from .observe import Sinks
from .prepare import Prepare
from .record import Record
from .score import ScoreStage
from .sync_trigger import Admission, SyncTrigger

log = logging.getLogger(__name__)


class Rig:
    """One running rig. Build with the parts (so tests and the demo can pass stand-ins), then start()."""

    def __init__(self, cfg: RigConfig, calib: Calibration, cameras: list, scorer: ItemScorer,
                 preprocessor: Preprocessor, link: DivertLink, events: EventLog | None = None, truth_fn=None,
                 clock: StageClock | None = None, watchdog=None, counts_per_m: float = 1000.0,
                 keep_items: bool = False, item_ids: ItemIds | None = None):
        self.cfg = cfg
        self.scorer = scorer
        self.link = link
        # a service keeps rolling windows of latency samples; bench and demo keep every one
        self.clock = clock or StageClock(window=None if keep_items else LATENCY_WINDOW)
        self.watchdog = watchdog
        self.ledger = Ledger(keep_items)
        speed = cfg.belt.speed_mps or 0.5
        self.cam_names = [c.camera for c in cameras]
        qsize = cfg.capture.queue_size
        self.frames_q: queue.Queue = queue.Queue(maxsize=qsize * max(1, len(cameras)))
        self.capture_q: queue.Queue = queue.Queue(maxsize=16)
        self.views_q: queue.Queue = queue.Queue(maxsize=4 * cfg.inference.max_batch)
        self.workers = [CameraWorker(c, self.frames_q, slots=qsize + 6, reconnect_s=cfg.capture.reconnect_s,
                                     on_frame=self._beat) for c in cameras]
        trig_name = cfg.trigger.camera or next((c.name for c in cfg.cameras if c.role == "top"), self.cam_names[0])
        trig_cam = calib.camera(trig_name)
        # a camera that stops must not blind the rig: once its partners are 250 ms (at least
        # 3 frame periods) late, the trigger camera's frames go on alone, and the items they
        # show fail safe (camera_missing). A camera that is merely slow catches up before that.
        fps = max(c.fps for c in cfg.cameras)
        stale_ms = max(3000.0 / fps, 250.0)
        self.sync = FrameSync(self.cam_names, cfg.capture.sync_tolerance_ms,
                              max_pending=int(stale_ms * fps / 1000.0) + 3, primary=trig_name, stale_ms=stale_ms)
        trigger = Trigger(trig_cam.depth_imager(), trig_cam.depth.depth_units_mm if trig_cam.depth else 1.0,
                          speed, cfg.trigger.min_height_mm, cfg.trigger.min_area_px, n_cameras=len(cameras),
                          thin_height_mm=cfg.trigger.thin_height_mm,
                          # the GPU's height map (kernels/height.cu) when preprocessing runs there too
                          height_backend="cuda" if cfg.preprocess.backend == "cuda" else None)
        # the stages, downstream first (each is handed what it calls next)
        self.record = Record(events, cfg.storage.save_crops, str(getattr(scorer, "version", "")), self.ledger)
        # decision observers (metrics, MQTT, health): rig/service/site.py appends them
        self.sinks = Sinks()
        self.dispatch = Dispatch(link, cfg.divert.gate_id, counts_per_m, self.ledger, self.clock, self.record,
                                 self.sinks)
        self.decide = Decide(cfg.decision.fail_safe, self.ledger, self.record.decision, self.dispatch, self.sinks)
        failsafe = self.decide.failsafe
        self.score = ScoreStage(scorer, cfg.decision.fpr_budget, self.ledger, self.clock, failsafe, self.decide)
        self.prepare = Prepare(calib, scorer, preprocessor, self.capture_q, self.views_q, self.ledger,
                               self.clock, self._beat, failsafe)
        self.batch_infer = BatchInfer(scorer, self.views_q, cfg.inference.max_batch,
                                      cfg.inference.max_wait_ms / 1000.0, self._more_views_coming, self.ledger,
                                      self.clock, self._beat, failsafe, self.score.submit)
        self.score.beat = self._beat
        self.sync_trigger = SyncTrigger(self.frames_q, self.sync, trigger, trig_name, self.clock, self._beat)
        self.admission = Admission(cfg, self.ledger, self.capture_q, self.cam_names, speed, failsafe, truth_fn,
                                   item_ids or ItemIds())
        self.sync_trigger.on_capture = self.admission
        self.deadlines = Deadlines(self.ledger, self.dispatch, failsafe, self._beat)
        self.run_id = self.admission.run_id
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = time.monotonic()
        self.ready = threading.Event()
        self.crashed: str | None = None  # name of a stage thread that died (the service exits non-zero)

    # ------------------------------------------------------------------ parts
    @property
    def pre(self) -> Preprocessor:
        return self.prepare.pre

    @pre.setter
    def pre(self, value: Preprocessor) -> None:  # the bench wraps it to mark its ranges
        self.prepare.pre = value

    @property
    def items(self) -> dict[int, ItemState]:
        return self.ledger.items

    @property
    def counters(self) -> dict:
        return self.ledger.snapshot()

    def expect_from(self, expected, scan_cfg) -> None:
        """Take the expected product from upstream: scans joined at admission, checked when scoring."""
        self.admission.expected = expected
        self.score.scan_cfg = scan_cfg

    def items_snapshot(self) -> list[ItemState]:
        return self.ledger.all_items()

    def _more_views_coming(self) -> bool:
        return not self.capture_q.empty() or self.prepare.busy

    def _beat(self, stage: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(stage)

    # ------------------------------------------------------------------ lifecycle
    def start(self, capture: bool = True) -> None:
        """Start the stage threads and (``capture``) the camera workers; without them the caller
        delivers frame sets itself (the bench's capacity mode: ``admission`` with captures)."""
        for w in self.workers if capture else ():
            w.start()
        scorers = [(f"score-{k + 1}" if k else "score", self.score) for k in range(self.cfg.inference.score_threads)]
        for name, stage in (("trigger", self.sync_trigger), ("prepare", self.prepare),
                            ("infer", self.batch_infer), *scorers, ("deadline", self.deadlines)):
            t = threading.Thread(target=self._guard(stage.loop, name), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.ready.set()

    def _guard(self, loop, name):
        def run():
            try:
                loop(self._stop)
            except Exception:  # a stage thread must never die silently: log, count, fail safe
                log.exception("stage %s crashed; failing safe on every item in flight", name)
                self.ledger.count("stage_errors")
                self.crashed = name
                self.decide.failsafe_all("fault")
        return run

    def sources_finished(self) -> bool:
        return all(w.finished.is_set() for w in self.workers)

    def idle(self) -> bool:
        return (not self.ledger.pending() and self.capture_q.empty() and self.views_q.empty()
                and self.score.queue.empty() and not self.score.busy and self.frames_q.empty())

    def last_gate_time(self) -> float:
        """When the last diverted item reaches the gate (monotonic; 0 when none)."""
        return self.ledger.last_gate_time()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: stop capture, flush the trigger, finish items in flight (decide or fail safe)."""
        for w in self.workers:
            w.stop()
        # items whose frames are already held get captured and scored
        self._drain_frames()
        for cap in self.sync_trigger.flush():
            self.admission(cap)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not self.idle():
            time.sleep(0.02)
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        self.decide.failsafe_all("shutdown")

    def _drain_frames(self) -> None:
        deadline = time.monotonic() + 1.0
        while not self.frames_q.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    # ------------------------------------------------------------------ reporting
    def camera_stats(self) -> dict:
        return {w.backend.camera: w.stats.as_dict() for w in self.workers}

    def dropped_frames(self) -> int:
        return sum(w.stats.dropped for w in self.workers) + self.sync.dropped

    def summary(self) -> dict:
        led = self.ledger
        with led.lock:
            c = dict(led.counters)
            lat = list(led.latencies_ms)
            items = list(led.items.values())
            first, last = led.first_capture_at, led.last_decision_at
        span = None
        if first is not None and last is not None:
            span = max(last - first, 1e-6)
        p = percentiles(lat)
        return {
            "items": c["items"], "decisions": c["decisions"], "diverted": c["diverted"],
            "divert_acked": c["divert_acked"], "late": c["late"], "dropped_frames": self.dropped_frames(),
            "failsafe": c["failsafe"], "faults": c["faults"], "overload": c["overload"],
            "stage_errors": c["stage_errors"],
            "latency_ms": {"p50": p["p50_ms"], "p95": p["p95_ms"], "p99": p["p99_ms"], "max": p["max_ms"]},
            "throughput_items_per_s": round(c["decisions"] / span, 3) if span else 0.0,
            "undecided": sum(1 for it in items if not it.decided),
        }
