"""The rig's pipeline: capture -> sync -> trigger -> prepare -> batch/infer -> score -> decide -> divert.

Threads and the bounded queues between them::

    capture-<cam> ──frames_q──> trigger ──capture_q──> prepare ──views_q──> infer ──> decide ──> divert link
                                                                                    ^             │
                                               deadline (fail-safe when late) ──────┘     results─┘──> events

A full queue never blocks capture: frames are dropped and counted at the
camera; an item that cannot be queued is decided at once by the fail-safe.
Every triggered item ends in exactly one decision: from its score, or from the
fail-safe when it is late (``decide_by`` passed), when a stage failed on it, or
when the rig shuts down with it in flight.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..calibration.align import align_depth_to_color
from ..calibration.model import Calibration
from .capture import CameraWorker, FrameSync
from .config import RigConfig
from .errors import RigError
from .geometry import roi_from_corners
from .stages import StageClock, percentiles
from .trigger import Capture, Trigger

log = logging.getLogger(__name__)


@dataclass
class ItemState:
    no: int
    item_id: str
    capture: Capture
    fire_at: int
    deadline: float  # the item reaches the gate (monotonic)
    decide_by: float  # after this the fail-safe decides
    dist_m: float = 0.0  # from where it was captured to the gate
    views: dict = field(default_factory=dict)  # view -> outputs
    crops: dict = field(default_factory=dict)  # view -> RGB crop
    canons: dict = field(default_factory=dict)  # view -> the crop in canonical pose (registration)
    expected: int = 0
    decided: bool = False
    decision: str = ""
    reason: str = ""
    score: object = None
    decided_at: float = 0.0
    truth: dict | None = None
    result: object = None


@dataclass
class ViewJob:
    item: ItemState
    view: str
    tensor: np.ndarray
    queued_at: float


class Rig:
    """One running rig. Build with the parts (so tests and the demo can pass stand-ins), then start()."""

    def __init__(self, cfg: RigConfig, calib: Calibration, cameras: list, scorer, preprocessor, link,
                 events=None, truth_fn=None, clock: StageClock | None = None, watchdog=None,
                 counts_per_m: float = 1000.0, keep_items: bool = False):
        self.cfg = cfg
        self.calib = calib
        self.scorer = scorer
        self.pre = preprocessor
        self.link = link
        self.events = events
        self.truth_fn = truth_fn
        self.clock = clock or StageClock()
        self.watchdog = watchdog
        self.cpm = counts_per_m
        self.speed = cfg.belt.speed_mps or 0.5
        self.cam_names = [c.camera for c in cameras]
        qsize = cfg.capture.queue_size
        self.frames_q: queue.Queue = queue.Queue(maxsize=qsize * max(1, len(cameras)))
        self.capture_q: queue.Queue = queue.Queue(maxsize=16)
        self.views_q: queue.Queue = queue.Queue(maxsize=4 * cfg.inference.max_batch)
        self.workers = [CameraWorker(c, self.frames_q, slots=qsize + 6, reconnect_s=cfg.capture.reconnect_s,
                                     on_frame=self._beat) for c in cameras]
        trig_name = cfg.trigger.camera or next((c.name for c in cfg.cameras if c.role == "top"), self.cam_names[0])
        trig_cam = calib.camera(trig_name)
        self.trigger_camera = trig_name
        # a camera that stops must not blind the rig: once its partners are 250 ms (at least
        # 3 frame periods) late, the trigger camera's frames go on alone, and the items they
        # show fail safe (camera_missing). A camera that is merely slow catches up before that.
        fps = max(c.fps for c in cfg.cameras)
        stale_ms = max(3000.0 / fps, 250.0)
        self.sync = FrameSync(self.cam_names, cfg.capture.sync_tolerance_ms,
                              max_pending=int(stale_ms * fps / 1000.0) + 3, primary=trig_name, stale_ms=stale_ms)
        self.trigger = Trigger(trig_cam.depth_imager(), trig_cam.depth.depth_units_mm if trig_cam.depth else 1.0,
                               self.speed, cfg.trigger.min_height_mm, cfg.trigger.min_area_px,
                               n_cameras=len(cameras))
        # depth-to-colour alignment: the kernel (twin or GPU) when the preprocessing runs
        # kernels, else the CPU reference; both give identical results (tests/kernels)
        self._align = align_depth_to_color
        if getattr(preprocessor, "name", "opencv") in ("twin", "cuda"):
            from functools import partial

            from ..kernels.align import align_depth_to_color as kernel_align

            self._align = partial(kernel_align, backend=preprocessor.name)
        self.run_id = time.strftime("%Y%m%dT%H%M%S")
        self._id_base = (int(time.time()) & 0xFFFF) << 16
        self.items: dict[int, ItemState] = {}
        # a service forgets items once they are past the gate; demo and bench keep them for summaries
        self.keep_items = keep_items
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int]] = []
        self._unsent: list[ItemState] = []  # diverts waiting for the link's belt position
        self._preparing = False  # the prepare stage is working on an item (its views are on the way)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counters = {"items": 0, "decisions": 0, "diverted": 0, "divert_acked": 0, "late": 0,
                         "faults": 0, "failsafe": 0, "overload": 0, "stage_errors": 0, "ignored_late_scores": 0}
        self.latencies_ms: list[float] = []
        self.first_capture_at: float | None = None
        self.last_decision_at: float | None = None
        self.started_at = time.monotonic()
        self.ready = threading.Event()
        self.crashed: str | None = None  # name of a stage thread that died (the service exits non-zero)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for w in self.workers:
            w.start()
        for name, fn in (("trigger", self._trigger_loop), ("prepare", self._prepare_loop),
                         ("infer", self._infer_loop), ("deadline", self._deadline_loop)):
            t = threading.Thread(target=self._guard(fn, name), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.ready.set()

    def _guard(self, fn, name):
        def run():
            try:
                fn()
            except Exception:  # a stage thread must never die silently: log, count, fail safe
                log.exception("stage %s crashed; failing safe on every item in flight", name)
                self.counters["stage_errors"] += 1
                self.crashed = name
                self._failsafe_all("fault")
        return run

    def sources_finished(self) -> bool:
        return all(w.finished.is_set() for w in self.workers)

    def idle(self) -> bool:
        with self._lock:
            pending = any(not it.decided for it in self.items.values()) or bool(self._unsent)
        return not pending and self.capture_q.empty() and self.views_q.empty() and self.frames_q.empty()

    def last_gate_time(self) -> float:
        """When the last diverted item reaches the gate (monotonic; 0 when none)."""
        with self._lock:
            return max((it.deadline for it in self.items.values() if it.decision == "divert"), default=0.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: stop capture, flush the trigger, finish items in flight (decide or fail safe)."""
        for w in self.workers:
            w.stop()
        # items whose frames are already held get captured and scored
        self._drain_frames()
        with self._lock:
            flushed = self.trigger.flush()
        for cap in flushed:
            self._admit(cap)
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end and not self.idle():
            time.sleep(0.02)
        self._stop.set()
        for t in self._threads:
            t.join(2.0)
        self._failsafe_all("shutdown")

    def _drain_frames(self) -> None:
        deadline = time.monotonic() + 1.0
        while not self.frames_q.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _beat(self, stage: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(stage)

    # ------------------------------------------------------------------ trigger
    def _trigger_loop(self) -> None:
        while not self._stop.is_set():
            self._beat("trigger")
            try:
                ref = self.frames_q.get(timeout=0.2)
            except queue.Empty:
                continue
            t0 = time.monotonic()
            sets = self.sync.push(ref)
            t1 = time.monotonic()
            for fs in sets:
                self.clock.add("sync", t0, t1)
                trig = fs[self.trigger_camera]
                self.clock.add("capture", trig.host_time, t0)
                t2 = time.monotonic()
                with self._lock:
                    caps = self.trigger.update(fs, trig.depth, trig.host_time, trig.timestamp_ms)
                self.clock.add("trigger", t2, time.monotonic())
                for f in fs.values():
                    f.release()
                for cap in caps:
                    self._admit(cap)

    def _admit(self, cap: Capture) -> None:
        no = (self._id_base + cap.item_no) & 0xFFFFFFFF  # the DIVERT frame carries a u32 item id
        dist = self.cfg.belt.gate_distance_m - cap.blob.x
        deadline = cap.host_time + dist / self.speed
        margin = (self.cfg.divert.ack_timeout_ms * (self.cfg.divert.retries + 1)) / 1000.0
        item = ItemState(no, f"{self.run_id}-{cap.item_no:06d}", cap, fire_at=-1, deadline=deadline,
                         decide_by=deadline - margin, dist_m=dist)
        if self.truth_fn is not None:
            item.truth = self.truth_fn(cap)
        with self._lock:
            self.items[no] = item
            heapq.heappush(self._deadlines, (item.decide_by, no))
            self.counters["items"] += 1
            if self.first_capture_at is None:
                self.first_capture_at = cap.host_time
        missing = sorted(set(self.cam_names) - set(cap.frames))
        if missing:  # a camera is down: this item cannot be seen from every side
            log.warning("item %s: no frame from %s; fail-safe", item.item_id, ", ".join(missing))
            self._failsafe(item, "camera_missing")
            return
        try:
            self.capture_q.put_nowait(item)
        except queue.Full:
            self.counters["overload"] += 1
            self._failsafe(item, "overload")

    def _fire_at(self, item: ItemState) -> int | None:
        """The belt position (counts) at which the item reaches the gate, from the
        controller's clock model; None while the link has no position (cut, restarting)."""
        try:
            pos = self.link.position_at(item.capture.host_time)
        except RigError:
            return None
        return pos + int(round(item.dist_m * self.cpm))

    # ------------------------------------------------------------------ prepare
    def _prepare_loop(self) -> None:
        while not self._stop.is_set():
            self._beat("prepare")
            try:
                item = self.capture_q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item.decided:  # the fail-safe got there first
                self._release(item)
                continue
            self._preparing = True  # until its views are queued: the batcher waits for them
            try:
                self._prepare_item(item)
            finally:
                self._preparing = False

    def _prepare_item(self, item: ItemState) -> None:
        t0 = time.monotonic()
        try:
            jobs = self._prepare(item)
        except Exception:  # a bad frame must not stop the rig: this item fails safe
            log.exception("item %s: preprocessing failed", item.item_id)
            self.counters["stage_errors"] += 1
            self._failsafe(item, "fault")
            return
        finally:
            self._release(item)
        self.clock.add("preprocess", t0, time.monotonic(), item.no)
        item.expected = len(jobs)
        if not jobs:
            self._failsafe(item, "no_view")
            return
        for job in jobs:
            try:
                self.views_q.put(job, timeout=max(0.0, item.decide_by - time.monotonic()))
            except queue.Full:
                self.counters["overload"] += 1
                self._failsafe(item, "overload")
                return

    def _release(self, item: ItemState) -> None:
        frames, item.capture.frames = item.capture.frames, {}
        for f in frames.values():
            f.release()

    def _prepare(self, item: ItemState) -> list[ViewJob]:
        cap = item.capture
        corners = cap.blob.corners()
        jobs = []
        for name, ref in cap.frames.items():
            cam = self.calib.camera(name)
            roi = roi_from_corners(cam, corners)
            if roi is None:
                continue
            x0, y0, x1, y1 = roi
            rgb = ref.color[y0:y1, x0:x1].copy()
            depth_crop = None
            if cam.depth is not None:
                aligned = self._align(ref.depth, cam.depth.K, cam.K, cam.size, cam.depth.T_color_depth,
                                               cam.depth.depth_units_mm / 1000.0)
                depth_crop = aligned[y0:y1, x0:x1].astype(np.float32) * np.float32(cam.depth.depth_units_mm)
            if not np.isfinite(rgb).all() or rgb.size == 0:
                raise RigError(f"camera {name}: empty or invalid crop {roi}")
            tensor = np.empty((1, self.scorer.channels, self.scorer.input_size, self.scorer.input_size), np.float32)
            self.pre.run([ref.color], [roi], tensor, 0)
            if self.scorer.channels > 3:
                tensor[0, 3:] = self.scorer.depth_channel(depth_crop)
            item.crops[name] = rgb
            item.canons[name] = self.scorer.canon_view(name, rgb, depth_crop)
            jobs.append(ViewJob(item, name, tensor[0], time.monotonic()))
        return jobs

    # ------------------------------------------------------------------ batch + infer + score
    def _infer_loop(self) -> None:
        max_batch = self.cfg.inference.max_batch
        max_wait = self.cfg.inference.max_wait_ms / 1000.0
        batch = np.empty((max_batch, self.scorer.channels, self.scorer.input_size, self.scorer.input_size),
                         np.float32)
        while not self._stop.is_set():
            self._beat("infer")
            try:
                first = self.views_q.get(timeout=0.2)
            except queue.Empty:
                continue
            jobs = [first]
            t_first = time.monotonic()
            while len(jobs) < max_batch:
                left = max_wait - (time.monotonic() - t_first)
                if left <= 0:
                    break
                if self.views_q.empty() and self.capture_q.empty() and not self._preparing:
                    break  # nothing else is on its way: waiting would only add latency
                try:
                    jobs.append(self.views_q.get(timeout=left))
                except queue.Empty:
                    break
            t_run = time.monotonic()
            for j in jobs:
                self.clock.add("batch_wait", j.queued_at, t_run, j.item.no)
            for k, j in enumerate(jobs):
                batch[k] = j.tensor
            try:
                outs = self.scorer.backend.run(batch[: len(jobs)])
            except Exception:
                log.exception("inference failed on a batch of %d", len(jobs))
                self.counters["stage_errors"] += 1
                for j in jobs:
                    self._failsafe(j.item, "fault")
                continue
            t_done = time.monotonic()
            self.clock.add("infer", t_run, t_done)
            for k, j in enumerate(jobs):
                j.item.views[j.view] = {name: v[k] for name, v in outs.items()}
                if len(j.item.views) == j.item.expected and not j.item.decided:
                    self._score_and_decide(j.item)

    def _score_and_decide(self, item: ItemState) -> None:
        t0 = time.monotonic()
        try:
            score = self.scorer.score_item(item.views, threshold=self._threshold(), canons=item.canons)
        except Exception:
            log.exception("item %s: scoring failed", item.item_id)
            self.counters["stage_errors"] += 1
            self._failsafe(item, "fault")
            return
        t1 = time.monotonic()
        timing = getattr(score, "timing_ms", None) or {}
        if timing:
            t = t0
            for stage in ("identify", "anomaly", "fuse"):
                if stage in timing:
                    self.clock.add(stage, t, t + timing[stage] / 1000.0, item.no)
                    t += timing[stage] / 1000.0
        else:
            self.clock.add("score", t0, t1, item.no)
        self._decide(item, "divert" if score.damaged else "pass", "score", score)

    def _threshold(self) -> float | None:
        fpr = self.cfg.decision.fpr_budget
        if fpr is None:
            return None
        if not hasattr(self, "_thr"):
            self._thr = self.scorer.threshold_for_fpr(fpr)
        return self._thr

    # ------------------------------------------------------------------ decide + divert
    def _failsafe(self, item: ItemState, reason: str) -> None:
        self._decide(item, "divert" if self.cfg.decision.fail_safe == "divert" else "pass", reason, None)

    def _failsafe_all(self, reason: str) -> None:
        with self._lock:
            pending = [it for it in self.items.values() if not it.decided]
        for it in pending:
            self._failsafe(it, reason)

    def _decide(self, item: ItemState, decision: str, reason: str, score) -> None:
        with self._lock:
            if item.decided:
                if reason == "score":
                    self.counters["ignored_late_scores"] += 1
                return
            item.decided = True
        now = time.monotonic()
        item.decision, item.reason, item.score, item.decided_at = decision, reason, score, now
        lat = (now - item.capture.host_time) * 1000.0
        with self._lock:
            self.counters["decisions"] += 1
            if reason == "late":
                self.counters["late"] += 1
            elif reason != "score":
                self.counters["failsafe"] += 1
            if decision == "divert":
                self.counters["diverted"] += 1
            self.latencies_ms.append(lat)
            self.last_decision_at = now
        if decision == "divert":
            item.fire_at = self._fire_at(item) or -1
        self._record(item, lat)
        item.views, item.crops, item.canons = {}, {}, {}  # network outputs and crops are in the event log now
        if decision == "divert":
            if item.fire_at < 0:
                # no belt position (the link is down): keep trying until the item reaches the gate
                log.warning("item %s: divert waits for the controller's belt position", item.item_id)
                with self._lock:
                    self._unsent.append(item)
            else:
                self._send(item)

    def _send(self, item: ItemState) -> None:
        t_send = time.monotonic()
        self.link.divert(item.no, self.cfg.divert.gate_id, item.fire_at, item.deadline, self._on_result)
        self.clock.add("divert_send", t_send, time.monotonic(), item.no)

    def _retry_unsent(self, now: float) -> None:
        with self._lock:
            waiting, self._unsent = self._unsent, []
        keep = []
        for item in waiting:
            if now >= item.deadline:
                log.error("item %s: the link never gave a belt position before the gate; late", item.item_id)
                with self._lock:
                    self.counters["late"] += 1
                if self.events is not None:
                    try:
                        self.events.mark_result(item.item_id, False, "late")
                    except RigError as exc:
                        log.error("item %s: result not recorded: %s", item.item_id, exc)
                continue
            fire_at = self._fire_at(item)
            if fire_at is None:
                keep.append(item)
                continue
            item.fire_at = fire_at
            self._send(item)
        if keep:
            with self._lock:
                self._unsent.extend(keep)

    def _record(self, item: ItemState, latency_ms: float) -> None:
        if self.events is None:
            return
        from .events import ItemRecord

        s = item.score
        views = {}
        for v, crop in item.crops.items():
            hm = None
            if s is not None and v in s.views:
                hm = s.views[v].get("heatmap")
            views[v] = {"rgb": crop, "heatmap": hm}
        rec = ItemRecord(
            id=item.item_id, captured_at=time.time() - (time.monotonic() - item.capture.host_time),
            belt_pos=int(item.fire_at), sku_pred=getattr(s, "sku_pred", "") or "",
            sku_conf=float(getattr(s, "sku_conf", 0.0) or 0.0), score=float(getattr(s, "score", -1.0)),
            type=getattr(s, "type", "") or "", decision=item.decision, reason=item.reason,
            latency_ms=latency_ms, model_version=str(getattr(self.scorer, "version", "")),
            views=views if self.cfg.storage.save_crops else {}, truth=item.truth)
        try:
            self.events.record(rec)
        except RigError as exc:  # the decision stands; the log says why it could not be stored
            log.error("item %s: event not recorded: %s", item.item_id, exc)
            self.counters["stage_errors"] += 1

    def _on_result(self, res) -> None:
        with self._lock:
            item = self.items.get(res.item_id)
        if item is None:
            log.warning("divert result for unknown item %s", res.item_id)
            return
        item.result = res
        self.clock.add("ack", res.sent_at, res.done_at, item.no)
        with self._lock:
            if res.acked:
                self.counters["divert_acked"] += 1
            elif res.late:
                self.counters["late"] += 1
            else:
                self.counters["faults"] += 1
        if self.events is not None:
            try:
                if res.acked:
                    self.events.mark_acked(item.item_id, time.time())
                else:
                    self.events.mark_result(item.item_id, False, "late" if res.late else "fault")
            except RigError as exc:
                log.error("item %s: divert result not recorded: %s", item.item_id, exc)

    # ------------------------------------------------------------------ deadlines
    def _deadline_loop(self) -> None:
        while not self._stop.is_set():
            self._beat("deadline")
            now = time.monotonic()
            due = []
            with self._lock:
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, no = heapq.heappop(self._deadlines)
                    it = self.items.get(no)
                    if it is not None and not it.decided:
                        due.append(it)
            for it in due:
                log.warning("item %s: no decision by its deadline; fail-safe", it.item_id)
                self._failsafe(it, "late")
            if self._unsent:
                self._retry_unsent(now)
            if not self.keep_items:
                self._forget_past(now)
            self._stop.wait(0.005)

    def _forget_past(self, now: float, after_s: float = 5.0) -> None:
        """Drop decided items well past their gate (their record is in the event log)."""
        with self._lock:
            if len(self.items) < 64:
                return
            old = [no for no, it in self.items.items()
                   if it.decided and now > it.deadline + after_s and it not in self._unsent]
            for no in old:
                del self.items[no]

    # ------------------------------------------------------------------ reporting
    def camera_stats(self) -> dict:
        return {w.backend.camera: w.stats.as_dict() for w in self.workers}

    def dropped_frames(self) -> int:
        return sum(w.stats.dropped for w in self.workers) + self.sync.dropped

    def summary(self) -> dict:
        with self._lock:
            c = dict(self.counters)
            lat = list(self.latencies_ms)
            items = list(self.items.values())
        span = None
        if self.first_capture_at is not None and self.last_decision_at is not None:
            span = max(self.last_decision_at - self.first_capture_at, 1e-6)
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
