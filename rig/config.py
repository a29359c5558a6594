"""Typed rig configuration: one YAML file describes one rig.

``load_config(path)`` parses and validates; every problem becomes one line
naming the file, the line, the key path, the bad value and what was expected,
and all of them are raised together in a :class:`ConfigError`.
``check_config(path)`` also runs the cross-file checks (calibration file
exists and holds every camera; model directory exists).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..calibration.model import load_calibration
from .capture import CAPTURE
from .foundation.errors import CalibrationError, ConfigError
from .foundation.yamlpos import line_of, load_with_lines
from .infer import INFERENCE
from .preprocess import PREPROCESS

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
# the model that ships in models/shipped (a data folder: the runtime reads it, it imports no training code)
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "shipped"
DEMO_CONFIG = PACKAGE_DATA / "demo.yaml"


def demo_state_dir() -> Path:
    """Where `rig demo` keeps its state, and where `rig status` and `rig review` look when given
    neither --state nor --config: $XDG_STATE_HOME/damage-rig/demo, else ~/.local/state/damage-rig/demo
    (the demo config's own storage.state_dir)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path("~/.local/state").expanduser()
    return root / "damage-rig" / "demo"


class _Strict(BaseModel):
    # every number finite: '.inf' or '.nan' is an error, not an unbounded value that crashes at start
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _choices(registry):
    """The names a config key may take: the backends registered for it (rig/foundation/registry.py)."""
    return Literal[registry.names()]


CaptureSource = _choices(CAPTURE)
InferenceBackendName = _choices(INFERENCE)
PreprocessBackendName = _choices(PREPROCESS)


class CameraSettings(_Strict):
    """RealSense settings written at start by the ``realsense`` backend (None: leave the camera's own).

    At 3 m/s an item moves 3 mm per millisecond of exposure: set ``exposure_us``
    (colour, manual; with light enough for it) rather than auto exposure.
    ``sync_mode``: one camera 'master', the others 'slave' (cable between their sync pins).
    """

    visual_preset: Literal["custom", "default", "hand", "high_accuracy", "high_density",
                           "medium_density"] | None = None
    exposure_us: Annotated[float, Field(ge=1, le=200_000)] | None = None  # colour; None: auto exposure
    gain: Annotated[float, Field(ge=0, le=256)] | None = None  # colour; needs exposure_us
    depth_exposure_us: Annotated[float, Field(ge=1, le=200_000)] | None = None  # None: auto exposure
    laser_power_mw: Annotated[float, Field(ge=0, le=360)] | None = None
    emitter: bool | None = None
    sync_mode: Literal["default", "master", "slave", "full_slave"] | None = None

    @model_validator(mode="after")
    def _gain_needs_exposure(self):
        if self.gain is not None and self.exposure_us is None:
            raise ValueError("gain applies to manual exposure only: set exposure_us too")
        if self.laser_power_mw is not None and self.emitter is False:
            raise ValueError("laser_power_mw with emitter: false — the laser is off; drop one of them")
        return self


class CameraConfig(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")]
    role: Literal["top", "side", "front", "back"] = "top"
    source: CaptureSource = "sim"
    serial: str | None = None
    recording: str | None = None
    resolution: tuple[Annotated[int, Field(ge=64, le=4096)], Annotated[int, Field(ge=48, le=4096)]] = (640, 480)
    fps: Annotated[int, Field(ge=1, le=300)] = 30
    settings: CameraSettings = CameraSettings()  # applied by the realsense backend at start

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "realsense" and not self.serial:
            raise ValueError("source 'realsense' needs 'serial' (the camera's serial number)")
        if self.source == "recording" and not self.recording:
            raise ValueError("source 'recording' needs 'recording' (a .db3 path)")
        return self


class CaptureConfig(_Strict):
    sync_tolerance_ms: Annotated[float, Field(gt=0, le=1000)] = 8.0
    queue_size: Annotated[int, Field(ge=1, le=1024)] = 8
    reconnect_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class TriggerConfig(_Strict):
    min_height_mm: Annotated[float, Field(gt=0, le=1000)] = 8.0
    min_area_px: Annotated[int, Field(ge=1, le=16_777_216)] = 400
    # 5x5-averaged height that also counts as the item (items from 2 mm, a blister's card); 0 = off.
    # Needs a belt flat to within about a millimetre under the trigger camera.
    thin_height_mm: Annotated[float, Field(ge=0, le=50)] = 1.5
    camera: str | None = None  # camera whose depth drives the trigger; default: first 'top'


class BeltConfig(_Strict):
    speed_mps: Annotated[float, Field(gt=0, le=10)] | None = 0.5
    encoder_counts_per_m: Annotated[float, Field(gt=0, le=10_000_000)] | None = None
    gate_distance_m: Annotated[float, Field(gt=0, le=50)] = 1.5
    item_pitch_m: Annotated[float, Field(gt=0, le=10)] = 0.5
    width_m: Annotated[float, Field(gt=0, le=5)] = 0.6

    @model_validator(mode="after")
    def _speed_or_encoder(self):
        if self.speed_mps is None and self.encoder_counts_per_m is None:
            raise ValueError("give speed_mps or encoder_counts_per_m")
        return self


class ModelConfig(_Strict):
    dir: str = "shipped"  # 'shipped' = the model that ships in models/shipped


class InferenceConfig(_Strict):
    backend: InferenceBackendName = "onnxruntime"
    allow_fallback: bool = True  # tensorrt unavailable -> onnxruntime (logged)
    max_batch: Annotated[int, Field(ge=1, le=64)] = 8
    # how long a batch with room left may wait for an item being prepared (0: dispatch at once)
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    # threads scoring items side by side (the registered comparison is most of an item's CPU: on a
    # many-core rig at 10 items/s one thread cannot keep up; docs/latency-budget.md)
    score_threads: Annotated[int, Field(ge=1, le=16)] = 1
    # threads comparing one item's views with their references side by side (1: one after the other)
    view_threads: Annotated[int, Field(ge=1, le=16)] = 1
    engine_dir: str | None = None


class PreprocessConfig(_Strict):
    backend: PreprocessBackendName = "opencv"


class DecisionConfig(_Strict):
    fpr_budget: Annotated[float, Field(gt=0, lt=1)] | None = None  # None: the model card's threshold
    fail_safe: Literal["divert", "pass"] = "divert"
    # the least time, from an item's capture to its decide-by moment, the rig needs to decide
    # (docs/latency-budget.md: 132 ms p99 on the Orin NX paper budget); the gate must be far enough
    min_decision_ms: Annotated[float, Field(ge=0, le=60_000)] = 150.0


class DivertConfig(_Strict):
    url: str = "emulator"  # 'emulator' = spawn the controller emulator on a pty
    baud: Annotated[int, Field(ge=1200, le=4_000_000)] = 115200
    gate_id: Annotated[int, Field(ge=0, le=255)] = 1
    ack_timeout_ms: Annotated[float, Field(gt=0, le=5000)] = 40.0
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    heartbeat_period_ms: Annotated[float, Field(ge=10, le=10000)] = 200.0
    controller_failsafe: Literal["divert_all", "stop_belt"] = "divert_all"


class StorageConfig(_Strict):
    state_dir: str = "state"
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    max_crops_mb: Annotated[float, Field(gt=0, le=100_000_000)] = 2048.0
    save_crops: bool = True


class MetricsConfig(_Strict):
    """Prometheus metrics served by `rig run` itself (rig/service/metrics.py)."""

    listen: Annotated[str, Field(pattern=r"^[^:\s]*:\d{1,5}$")] = "127.0.0.1:9464"  # host:port; loopback unless set


class MqttConfig(_Strict):
    """Every decision published over MQTT (rig/service/mqtt.py)."""

    url: Annotated[str, Field(pattern=r"^mqtts?://[^/\s]+(:\d{1,5})?/?$")] = "mqtt://127.0.0.1:1883"
    topic_prefix: Annotated[str, Field(min_length=1, pattern=r"^[^#+\s]+$")] = "damage-rig"
    client_id: str | None = None  # default: damage-rig-<rig name>
    username_env: str = "RIG_MQTT_USERNAME"  # read from the environment (systemd/damage-rig.env)
    password_env: str = "RIG_MQTT_PASSWORD"
    ca_file: str | None = None  # mqtts: the broker's CA bundle (default: the system's)
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    outbox_max: Annotated[int, Field(ge=100, le=10_000_000)] = 200_000  # events kept on disk while the broker is away
    queue_size: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000  # decisions waiting for the outbox thread


class ScanConfig(_Strict):
    """The expected product from upstream (rig/scan): a barcode scanner on a serial line or the WMS over MQTT."""

    url: Annotated[str, Field(min_length=1)]  # a serial URL or device ('/dev/ttyACM0', 'loop://'), 'mqtt', or 'sim'
    baud: Annotated[int, Field(ge=1200, le=4_000_000)] = 9600
    distance_m: Annotated[float, Field(ge=0, le=100)] = 1.0  # scanner upstream of the cameras' trigger point
    match_window_m: Annotated[float, Field(gt=0, le=5)] = 0.2  # a scan joins the item within this belt distance
    on_wrong_item: Literal["divert", "pass"] = "divert"
    min_id_conf: Annotated[float, Field(ge=0, le=1)] = 0.9  # image identification must be this sure to overrule
    codes: dict[str, str] = {}  # barcode -> SKU, for scanners that send codes (GTIN, ...) rather than SKUs
class GalleryConfig(_Strict):
    """The product references from a site's reference store (rig/detect/catalogue.py), cached on the rig.

    Without this section the rig uses the model folder's gallery, as before."""

    # postgresql://USER@HOST:PORT/DB; a password belongs in ~/.pgpass or PGPASSWORD, not in this file
    store: Annotated[str, Field(pattern=r"^postgres(ql)?://\S+$")]
    cache_mb: Annotated[float, Field(ge=16, le=1_000_000)] = 512.0  # products kept in memory (LRU)
    disk_mb: Annotated[float, Field(ge=0, le=10_000_000)] = 4096.0  # second level in the state directory
    # a product whose references are still being fetched: scored without the reference channels, or diverted
    on_miss: Literal["score", "divert"] = "score"
    site: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")] | None = None  # default: rig name
    warm_products: Annotated[int, Field(ge=0, le=10_000_000)] = 2000  # the site's most frequent, at start
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    nprobe: Annotated[int, Field(ge=1, le=4096)] = 32  # inverted lists searched (ANN recall vs speed)


class CameraFaultConfig(_Strict):
    """One fault injected into a sim camera: ``kind`` from ``at_s`` (belt time) for ``for_s`` s (None: until closed)."""

    kind: Literal["stop", "hang", "zeros", "nan_depth", "wrong_size"]
    at_s: float
    for_s: float | None = None


class SimScannerConfig(_Strict):
    """The simulator's upstream scanner (``scan.url: sim``): shares of wrong, missing and unreadable scans."""

    wrong_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    missing_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    unreadable_rate: Annotated[float, Field(ge=0, le=1)] = 0.0


class SimConfig(_Strict):
    """Settings of the stand-ins: the ``sim`` capture source's belt, and faults injected into
    the sim cameras and the controller emulator (``divert.url: emulator``)."""

    # what the sim cameras see: the belt with items, or the ChArUco board held up for calibration stills
    scene: Literal["belt", "charuco"] = "belt"
    board_hold_s: Annotated[float, Field(gt=0, le=60)] = 0.5  # charuco: seconds the board holds each pose
    items: Annotated[int, Field(ge=1)] | None = None  # None: an endless belt
    seed: int = 1
    damage_rate: Annotated[float, Field(ge=0, le=1)] = 0.2
    camera_faults: dict[str, list[CameraFaultConfig]] = {}
    emulator_faults: dict[str, int | float] | None = None  # Faults of rig/divert/emulator.py
    scanner: SimScannerConfig = SimScannerConfig()  # the scanner upstream, when scan.url is 'sim'
    # the wall clock item ids are drawn from, shifted (s): rehearses a restart after the clock
    # jumped (65,536 s was the old u32 id's wrap) against a long-lived controller
    id_clock_offset_s: Annotated[float, Field(ge=-1e9, le=1e9)] = 0.0
    # render the simulated cameras in a driver process of their own, frames through shared memory
    # (`rig bench`: the stand-ins' CPU apart from the rig's); camera_faults need it off
    separate_process: bool = False


class RigConfig(_Strict):
    name: str = "rig"
    cameras: Annotated[list[CameraConfig], Field(min_length=1, max_length=16)]
    calibration: str
    belt: BeltConfig = BeltConfig()
    capture: CaptureConfig = CaptureConfig()
    trigger: TriggerConfig = TriggerConfig()
    model: ModelConfig = ModelConfig()
    inference: InferenceConfig = InferenceConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    decision: DecisionConfig = DecisionConfig()
    divert: DivertConfig = DivertConfig()
    storage: StorageConfig = StorageConfig()
    metrics: MetricsConfig | None = None
    mqtt: MqttConfig | None = None
    scan: ScanConfig | None = None
    gallery: GalleryConfig | None = None
    sim: SimConfig = SimConfig()

    # resolved at load time; not part of the file
    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _gate_far_enough(self):
        """The item must take longer to reach the gate than deciding plus the divert reserve."""
        speed = self.belt.speed_mps
        if speed is None:
            return self  # encoder only: the speed is known at run time
        travel_ms = self.belt.gate_distance_m / speed * 1000.0
        reserve_ms = self.divert.ack_timeout_ms * (self.divert.retries + 1)
        need_ms = reserve_ms + self.decision.min_decision_ms
        if travel_ms < need_ms:
            raise ValueError(
                f"belt.gate_distance_m {self.belt.gate_distance_m} m at belt.speed_mps {speed} m/s gives "
                f"{travel_ms:.0f} ms from capture to gate, less than the divert reserve ({reserve_ms:.0f} ms = "
                f"ack_timeout_ms x (retries + 1)) plus decision.min_decision_ms ({self.decision.min_decision_ms:.0f} "
                f"ms): every item would fail safe. Move the gate to at least "
                f"{need_ms / 1000.0 * speed:.3f} m, slow the belt, or shorten the reserve")
        return self

    @model_validator(mode="after")
    def _unique_cameras(self):
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"camera names must be unique; repeated: {dupes}")
        masters = [c.name for c in self.cameras if c.settings.sync_mode == "master"]
        if len(masters) > 1:
            raise ValueError(f"settings.sync_mode 'master' on more than one camera ({masters}): one camera "
                             "drives the sync line, the others are 'slave'")
        if self.trigger.camera is not None and self.trigger.camera not in names:
            raise ValueError(f"trigger.camera {self.trigger.camera!r} is not one of the cameras {names}")
        if self.scan is not None and self.scan.url == "mqtt" and self.mqtt is None:
            raise ValueError("scan.url 'mqtt' reads the expected topic from the broker: add an 'mqtt' section")
        if self.scan is not None and self.scan.url == "sim" and any(c.source != "sim" for c in self.cameras):
            raise ValueError("scan.url 'sim' needs the simulated belt (every camera's source 'sim')")
        return self

    def resolve(self, relative: str) -> Path:
        """A path from the file, relative to the config file's folder."""
        p = Path(relative).expanduser()
        if p.is_absolute() or self.source_path is None:
            return p
        return (self.source_path.parent / p).resolve()

    def with_state_dir(self, path: str | Path) -> RigConfig:
        """This config with its state directory replaced (a path relative to the working directory)."""
        storage = self.storage.model_copy(update={"state_dir": str(Path(path).expanduser().resolve())})
        return self.model_copy(update={"storage": storage})

    def with_sim(self, **changes) -> RigConfig:
        """This config with fields of its ``sim`` section changed (validated like the file's)."""
        try:
            sim = SimConfig.model_validate({**self.sim.model_dump(), **changes})
        except ValidationError as exc:
            problems = [f"sim.{'.'.join(str(p) for p in e['loc'])}: {_describe(e)}" for e in exc.errors()]
            raise ConfigError(f"{len(problems)} problem(s) in the sim settings", problems) from None
        return self.model_copy(update={"sim": sim})

    @property
    def calibration_path(self) -> Path:
        return self.resolve(self.calibration)

    @property
    def model_dir(self) -> Path:
        if self.model.dir == "shipped":
            return SHIPPED_MODEL_DIR
        return self.resolve(self.model.dir)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.storage.state_dir)


def _describe(err: dict) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return f"unknown key (value {value!r}); check the spelling"
    if kind == "missing":
        return "required key is missing"
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"bad value {shown}: {msg}"


def parse_config(text: str, source: str = "<config>") -> RigConfig:
    try:
        data, lines = load_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML", [f"{where}: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top", [f"{source}:1: expected a mapping of keys"])
    try:
        cfg = RigConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # pydantic appends the union/literal branch to the loc for some errors
            path_items = [p for p in loc if isinstance(p, (str, int))]
            line = line_of(lines, tuple(path_items))
            key_path = ".".join(str(p) for p in path_items) or "<top>"
            problems.append(f"{source}:{line}: {key_path}: {_describe(err)}")
        raise ConfigError(f"{source}: {len(problems)} problem(s) in the configuration", problems) from None
    return cfg


def load_config(path: str | Path) -> RigConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", [f"{path}: file does not exist"])
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read", [f"{path}: cannot read: {exc}"]) from None
    cfg = parse_config(text, str(path))
    return cfg.model_copy(update={"source_path": path.resolve()})


def check_config(path: str | Path) -> RigConfig:
    """Validate the file and everything it points at; raise ConfigError listing every problem."""
    cfg = load_config(path)
    _, lines = load_with_lines(Path(path).read_text())
    problems = []
    try:
        calib = load_calibration(cfg.calibration_path)
    except CalibrationError as exc:
        problems.append(f"{path}:{line_of(lines, ('calibration',))}: calibration: {exc}")
    else:
        for i, cam in enumerate(cfg.cameras):
            if cam.name not in calib.cameras:
                problems.append(
                    f"{path}:{line_of(lines, ('cameras', i, 'name'))}: cameras.{i}.name: camera "
                    f"{cam.name!r} is not in the calibration file {cfg.calibration_path} "
                    f"(it has {sorted(calib.cameras)})")
            elif tuple(calib.cameras[cam.name].size) != tuple(cam.resolution):
                problems.append(
                    f"{path}:{line_of(lines, ('cameras', i, 'resolution'))}: cameras.{i}.resolution: "
                    f"{list(cam.resolution)} differs from the calibrated size "
                    f"{list(calib.cameras[cam.name].size)}")
    for i, cam in enumerate(cfg.cameras):
        if cam.source == "recording" and not cfg.resolve(cam.recording).is_file():
            problems.append(f"{path}:{line_of(lines, ('cameras', i, 'recording'))}: cameras.{i}.recording: "
                            f"file {cfg.resolve(cam.recording)} does not exist")
    if not (cfg.model_dir / "model_card.yaml").is_file():
        problems.append(f"{path}:{line_of(lines, ('model', 'dir'))}: model.dir: {cfg.model_dir} holds no "
                        "model_card.yaml (train one with `rig train` or use 'shipped')")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems)
    return cfg
