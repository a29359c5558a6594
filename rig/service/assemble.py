"""Build a running rig from its config alone: the one place where parts are chosen and wired.

``open_rig(cfg)`` loads the calibration, the model (Scorer + inference backend
through the fallback chain), the preprocessor, the divert link (spawning the
controller emulator when ``divert.url`` is ``emulator``), the event log and
the cameras (each ``source`` backend from the capture registry; the simulator's
belt and the faults injected into the stand-ins are the config's ``sim``
section), and returns a :class:`RigHandle` that owns them all and closes them
in order. `rig run`, `rig demo` and `rig bench` all go through it and through
the one service loop (loop.py), so they run the same code.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...calibration.model import load_calibration
from ..capture.sources import CaptureSources, open_sources
from ..config import RigConfig
from ..detect.card import read_card, verify_model_files
from ..detect.scoring import Scorer
from ..divert.base import DivertLink, open_link
from ..divert.spawn import EmulatorProcess, spawn_emulator
from ..foundation.errors import DeviceError, ModelError
from ..foundation.item_ids import ItemIds
from ..foundation.threads import one_owner_per_core
from ..infer import make_backend
from ..pipeline.clock import StageClock
from ..pipeline.recorder import Recorder, open_event_log
from ..pipeline.rig import Rig
from ..preprocess import make_preprocessor
from ..scan import ExpectedProducts
from .health import DecisionStats
from .metrics import RigMetrics
from .mqtt import MqttPublisher
from .site import attach

log = logging.getLogger(__name__)


@dataclass
class RigHandle:
    rig: Rig
    cfg: RigConfig
    link: DivertLink
    emulator: EmulatorProcess | None = None
    events: Recorder | None = None
    sources: CaptureSources | None = None
    closers: list = field(default_factory=list)
    # set by site.attach: health figures, and what the config's metrics/mqtt/scan sections add
    stats: DecisionStats | None = None
    metrics: RigMetrics | None = None
    mqtt: MqttPublisher | None = None
    expected: ExpectedProducts | None = None
    sim_scanner: object = None  # the simulator's scanner (scan.url 'sim'): what it sent to each item
    threads: dict = field(default_factory=dict)  # the thread settings in force (thread_settings)

    def close(self) -> None:
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception as exc:  # closing must go on with the next part
                log.warning("while closing: %s", exc)
        self.closers.clear()


def counts_per_m(cfg: RigConfig) -> float:
    return float(cfg.belt.encoder_counts_per_m or 1000.0)


def check_model_input(scorer) -> None:
    """The network's input shape must be what the model card says (channels, size)."""
    shape = list(getattr(scorer.backend, "input_shape", None) or [])
    want = [scorer.channels, scorer.input_size, scorer.input_size]
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]) and shape[1:] != want:
        raise ModelError(f"{scorer.onnx_path}: the network takes input {shape[1:]} (C, H, W) but the model "
                         f"card says {want}; the card and the ONNX file are from different models")


def load_scorer(cfg: RigConfig) -> Scorer:
    """The configured model with its inference backend (through the fallback chain)."""
    card = read_card(cfg.model_dir)
    verify_model_files(cfg.model_dir, card)  # before any runtime parses a file
    onnx_path = Path(cfg.model_dir) / card["onnx"]["file"]
    backend = make_backend(cfg.inference.backend, onnx_path, max_batch=cfg.inference.max_batch,
                           threads=cfg.inference.threads, allow_fallback=cfg.inference.allow_fallback,
                           engine_dir=cfg.inference.engine_dir)
    if cfg.gallery is None:
        return Scorer.load(cfg.model_dir, backend=backend)
    # references from the site's reference store, cached on the rig (rig/detect/catalogue.py)
    from ..detect.catalogue import CatalogueGallery
    from ..detect.store import model_key

    g = cfg.gallery
    cat = CatalogueGallery(g.store, model_key(card), cache_mb=g.cache_mb, disk_mb=g.disk_mb,
                           state_dir=cfg.state_dir, site=g.site or cfg.name, warm_products=g.warm_products,
                           connect_timeout_s=g.connect_timeout_s, nprobe=g.nprobe)
    log.info("gallery from the reference store: model %s, version %s, %d products (%s), cache %.0f MB",
             cat.key, cat.version, len(cat.index), cat.index.kind, g.cache_mb)
    return Scorer(card, cat, backend, cfg.model_dir)


def open_divert(cfg: RigConfig, state_dir: Path, closers: list) -> tuple[DivertLink, EmulatorProcess | None]:
    """The divert link, with the controller emulator spawned first when ``divert.url`` is ``emulator``."""
    cpm = counts_per_m(cfg)
    emulator = None
    url = cfg.divert.url
    if url == "emulator":
        emulator = spawn_emulator(speed_mps=cfg.belt.speed_mps or 0.5, counts_per_m=cpm,
                                  failsafe=cfg.divert.controller_failsafe, gates=(cfg.divert.gate_id,),
                                  faults=cfg.sim.emulator_faults, log_path=state_dir / "emulator-gate.jsonl")
        closers.append(emulator.stop)
        url = emulator.port
    link = open_link(url, baud=cfg.divert.baud, ack_timeout_ms=cfg.divert.ack_timeout_ms,
                     retries=cfg.divert.retries, heartbeat_period_ms=cfg.divert.heartbeat_period_ms,
                     counts_per_m=cpm, speed_mps=cfg.belt.speed_mps)
    closers.append(link.close)
    if not link.wait_ready(5.0):
        raise DeviceError(f"divert controller on {url} sent no heartbeat within 5 s "
                          f"({link.last_error or 'no error reported'})")
    return link, emulator


def thread_settings(threads: dict, scorer, pre, cfg: RigConfig) -> dict:
    """Who owns the cores: what `rig bench` prints and writes next to its figures."""
    backend = getattr(scorer, "backend", None)
    return {**threads,
            "inference": getattr(backend, "describe", lambda: "?")(),
            "inference_intra_op_threads": getattr(backend, "threads", cfg.inference.threads),
            "inference_spinning": "off" if getattr(backend, "name", "") == "onnxruntime" else "n/a",
            "twin_threads": getattr(pre, "threads", None),
            "stage_threads": ["trigger", "prepare", "infer", "score", "deadline"],
            "score_threads": cfg.inference.score_threads,
            "view_threads": cfg.inference.view_threads,
            "cores": os.cpu_count()}


def _id_clock(offset_s: float):
    """time.time, or (testing, ``sim.id_clock_offset_s``) a clock that far ahead or behind."""
    if not offset_s:
        return time.time
    return lambda: time.time() + offset_s


def open_rig(cfg: RigConfig, *, clock: StageClock | None = None, watchdog=None, with_events: bool = True,
             scorer=None, keep_items: bool = False) -> RigHandle:
    """Everything the config describes, opened and connected but not started.

    The keyword arguments observe the rig (``clock``, ``watchdog``, ``keep_items`` for summaries)
    or replace its model (``scorer``, for tests and the bench); what it runs is the config's.
    """
    calib = load_calibration(cfg.calibration_path)
    for c in cfg.cameras:
        calib.camera(c.name)  # every camera must be calibrated
    closers: list = []
    try:
        threads = one_owner_per_core()  # BLAS and OpenCV on their callers' threads
        if scorer is None:
            scorer = load_scorer(cfg)
            if hasattr(scorer.gallery, "close"):  # the reference store's cache and threads
                closers.append(scorer.gallery.close)
        check_model_input(scorer)
        if hasattr(scorer, "set_view_threads"):
            scorer.set_view_threads(cfg.inference.view_threads)
        pre = make_preprocessor(cfg.preprocess.backend, scorer.input_size, scorer.mean, scorer.std)
        if hasattr(pre, "set_threads") and not os.environ.get("DAMAGE_RIG_TWIN_THREADS"):
            pre.set_threads(1)  # the twin runs on the prepare thread (its helpers persist when > 1)
        sd = cfg.state_dir
        try:
            sd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # decisions do not depend on the state disk: start, report, retry later
            log.error("state directory %s unusable (%s): the rig decides and diverts; records wait", sd, exc)
        link, emulator = open_divert(cfg, sd, closers)
        # event log: written by the recorder's thread, which opens it (and retries while the state
        # disk is full, read-only or locked): the rig starts and decides without it
        events = None
        if with_events:
            events = open_event_log(sd, cfg.storage)
            closers.insert(0, events.close)  # closed last: the link's final results are recorded too
        sources = open_sources(cfg, calib)
        closers.append(sources.close)
        rig = Rig(cfg, calib, sources.cameras, scorer, pre, link, events=events, truth_fn=sources.truth_fn,
                  clock=clock, watchdog=watchdog, counts_per_m=counts_per_m(cfg), keep_items=keep_items,
                  item_ids=ItemIds(sd, clock=_id_clock(cfg.sim.id_clock_offset_s)))
        handle = RigHandle(rig, cfg, link, emulator, events, sources, closers)
        handle.threads = thread_settings(threads, scorer, pre, cfg)
        attach(handle)
        return handle
    except BaseException:
        for fn in reversed(closers):  # undo what was opened, then report the first failure
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
                log.warning("while closing after a failed start: %s", exc)
        raise
