"""Build a running rig from a config: the one place where parts are chosen and wired.

``open_rig(cfg)`` loads the calibration, the model (Scorer + inference backend
through the fallback chain), the preprocessor, the divert link (spawning the
controller emulator when ``divert.url`` is ``emulator``), the event log and
the cameras, and returns a :class:`RigHandle` that owns them all and closes
them in order. `rig run`, `rig demo` and `rig bench` all go through it, so they
run the same code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..calibration.model import load_calibration
from .capture import make_cameras
from .config import RigConfig
from .errors import DeviceError, ModelError, RigError
from .pipeline import Rig
from .stages import StageClock

log = logging.getLogger(__name__)


@dataclass
class RigHandle:
    rig: Rig
    cfg: RigConfig
    link: object
    emulator: object = None
    events: object = None
    sim_belt: object = None
    closers: list = field(default_factory=list)

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


def open_rig(cfg: RigConfig, *, sim_items: int | None = None, sim_seed: int = 1, damage_rate: float = 0.2,
             state_dir: Path | None = None, emulator_faults: dict | None = None, clock: StageClock | None = None,
             watchdog=None, with_events: bool = True, scorer=None,
             camera_faults: dict | None = None, keep_items: bool = False) -> RigHandle:
    """Everything a rig needs, opened and connected but not started.

    ``emulator_faults`` and ``camera_faults`` ({camera: [{kind, at_s, for_s}]}) inject faults into the
    stand-ins (controller emulator, sim cameras) for tools/fault_table.py and the `faults` tests.
    """
    from .detect import Scorer
    from .divert import open_link, spawn_emulator
    from .infer import make_backend
    from .preprocess import make_preprocessor

    calib = load_calibration(cfg.calibration_path)
    for c in cfg.cameras:
        calib.camera(c.name)  # every camera must be calibrated
    closers = []
    handle = None
    try:
        # model
        if scorer is None:
            from .detect.scorer import read_card, verify_model_files

            card = read_card(cfg.model_dir)
            verify_model_files(cfg.model_dir, card)  # before any runtime parses a file
            onnx_path = Path(cfg.model_dir) / card["onnx"]["file"]
            backend = make_backend(cfg.inference.backend, onnx_path, max_batch=cfg.inference.max_batch,
                                   threads=cfg.inference.threads, allow_fallback=cfg.inference.allow_fallback,
                                   engine_dir=cfg.inference.engine_dir)
            scorer = Scorer.load(cfg.model_dir, backend=backend)
        check_model_input(scorer)
        pre = make_preprocessor(cfg.preprocess.backend, scorer.input_size, scorer.mean, scorer.std)
        sd = Path(state_dir).expanduser() if state_dir is not None else cfg.state_dir
        try:
            sd.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # decisions do not depend on the state disk: start, report, retry later
            log.error("state directory %s unusable (%s): the rig decides and diverts; records wait", sd, exc)
        # divert link
        cpm = counts_per_m(cfg)
        emulator = None
        url = cfg.divert.url
        if url == "emulator":
            emulator = spawn_emulator(speed_mps=cfg.belt.speed_mps or 0.5, counts_per_m=cpm,
                                      failsafe=cfg.divert.controller_failsafe, gates=(cfg.divert.gate_id,),
                                      faults=emulator_faults, log_path=sd / "emulator-gate.jsonl")
            closers.append(emulator.stop)
            url = emulator.port
        link = open_link(url, baud=cfg.divert.baud, ack_timeout_ms=cfg.divert.ack_timeout_ms,
                         retries=cfg.divert.retries, heartbeat_period_ms=cfg.divert.heartbeat_period_ms,
                         counts_per_m=cpm, speed_mps=cfg.belt.speed_mps)
        closers.append(link.close)
        if not link.wait_ready(5.0):
            raise DeviceError(f"divert controller on {url} sent no heartbeat within 5 s "
                              f"({link.last_error or 'no error reported'})")
        # event log: written by the recorder's thread, which opens it (and retries while the state
        # disk is full, read-only or locked): the rig starts and decides without it
        events = None
        if with_events:
            from .recorder import open_event_log

            events = open_event_log(sd, cfg.storage)
            closers.insert(0, events.close)  # closed last: the link's final results are recorded too
        # cameras
        sim_belt = None
        if any(c.source == "sim" for c in cfg.cameras):
            from .capture.sim import SimBelt

            sim_belt = SimBelt(calib, [c.name for c in cfg.cameras if c.source == "sim"],
                               cfg.belt.speed_mps or 0.5, cfg.belt.item_pitch_m, seed=sim_seed,
                               damage_rate=damage_rate, n_items=sim_items)
            closers.append(sim_belt.close)
        cams = make_cameras(cfg, calib, sim_belt, sim_faults=camera_faults)
        truth_fn = None
        if sim_belt is not None:
            def truth_fn(cap, belt=sim_belt):
                return belt.truth_near(cap.host_time - belt.start, cap.blob.x, cap.blob.y)
        from .item_ids import ItemIds

        rig = Rig(cfg, calib, cams, scorer, pre, link, events=events, truth_fn=truth_fn, clock=clock,
                  watchdog=watchdog, counts_per_m=cpm, keep_items=keep_items, item_ids=ItemIds(sd))
        handle = RigHandle(rig, cfg, link, emulator, events, sim_belt, closers)
        return handle
    except BaseException:
        for fn in reversed(closers):  # undo what was opened, then report the first failure
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
                log.warning("while closing after a failed start: %s", exc)
        raise


def run_until_done(handle: RigHandle, max_s: float | None = None, stop_event=None) -> None:
    """Run until the sources are exhausted and every item is decided (or max_s, or stop_event)."""
    rig = handle.rig
    if handle.sim_belt is not None:
        handle.sim_belt.begin()
    rig.start()
    t0 = time.monotonic()
    while True:
        if stop_event is not None and stop_event.is_set():
            break
        if max_s is not None and time.monotonic() - t0 > max_s:
            break
        if rig.sources_finished() and rig.idle() and time.monotonic() > rig.last_gate_time() + 0.3:
            break  # everything decided, and every diverted item has reached its gate
        if rig.crashed:
            break
        time.sleep(0.05)
    rig.stop()


__all__ = ["RigError", "RigHandle", "open_rig", "run_until_done"]
