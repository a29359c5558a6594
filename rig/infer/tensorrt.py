"""TensorRT on the device: engines built from the ONNX, keyed, double-buffered.

An engine is only valid for the exact ONNX file, TensorRT version, GPU (name and
compute capability), precision and batch profile it was built for. Each engine
file ``<model>-<precision>-b<N>.engine`` carries a JSON sidecar with that key;
:func:`resolve_engine` decides load / build / rebuild / refuse from the sidecar
alone, so the policy is tested here without a GPU.

tensorrt and pycuda are imported only inside :class:`TensorRTBackend` and
:func:`build_engine`; when they are missing the constructor raises DeviceError
naming what is missing, and ``make_backend`` falls back to onnxruntime when the
config allows it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...kernels.loader import cache_dir, cuda_context, cuda_device_info
from ..foundation.errors import DeviceError, ModelError
from ..foundation.hashing import file_sha256
from . import INFERENCE

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str           # "fp16" or "fp32"
    batch_profile: tuple[int, int, int]  # min, opt, max batch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_profile"] = list(self.batch_profile)
        return d


def make_key(onnx_path, tensorrt_version: str, gpu_name: str, compute_capability: str,
             fp16: bool, max_batch: int) -> EngineKey:
    if max_batch < 1:
        raise ModelError(f"max_batch must be >= 1, got {max_batch}")
    return EngineKey(onnx_sha256=file_sha256(onnx_path), tensorrt_version=str(tensorrt_version),
                     gpu_name=str(gpu_name), compute_capability=str(compute_capability),
                     precision="fp16" if fp16 else "fp32", batch_profile=(1, max_batch, max_batch))


def key_differences(stored: dict, wanted: EngineKey) -> list[str]:
    """One line per field where a stored key differs from the wanted one."""
    out = []
    for field, want in wanted.to_dict().items():
        have = stored.get(field)
        if have != want:
            out.append(f"{field}: engine has {have!r}, need {want!r}")
    return out


def default_engine_dir() -> Path:
    return cache_dir() / "engines"


def engine_path(engine_dir: str | Path, onnx_path: str | Path, key: EngineKey) -> Path:
    b = key.batch_profile[2]
    return Path(engine_dir) / f"{Path(onnx_path).stem}-{key.precision}-b{b}.engine"


def sidecar(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def resolve_engine(engine_dir, onnx_path, key: EngineKey, rebuild: bool = True) -> tuple[Path, str]:
    """Return (engine path, action) with action "load", "build" or "rebuild".

    Loads only when the sidecar key matches exactly; otherwise builds/rebuilds, or
    with ``rebuild=False`` raises ModelError listing what differs and the command to run.
    """
    path = engine_path(engine_dir or default_engine_dir(), onnx_path, key)
    meta = sidecar(path)
    if path.is_file() and meta.is_file():
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            stored = {"unreadable": str(exc)}
        diffs = key_differences(stored, key)
        if not diffs:
            want = stored.get("engine_sha256")
            if want is None:
                diffs = ["the sidecar records no engine_sha256 (built before engines were verified)"]
            elif file_sha256(path) != want:
                raise ModelError(f"TensorRT engine {path}: SHA-256 does not match its sidecar "
                                 f"{sidecar(path).name} (changed or damaged after it was built); delete both "
                                 "and rebuild: rig engine build --model MODEL_DIR")
            else:
                return path, "load"
        if not rebuild:
            raise ModelError(f"TensorRT engine {path} was built for something else:\n  "
                             + "\n  ".join(diffs)
                             + "\nrebuild it on this device: rig engine build --model MODEL_DIR"
                             + (" --fp16" if key.precision == "fp16" else "")
                             + f" --max-batch {key.batch_profile[2]}")
        log.warning("engine %s is stale (%s); rebuilding", path, "; ".join(diffs))
        return path, "rebuild"
    if not rebuild:
        raise ModelError(f"no TensorRT engine at {path}; build it on this device: "
                         f"rig engine build --model MODEL_DIR --max-batch {key.batch_profile[2]}"
                         + (" --fp16" if key.precision == "fp16" else ""))
    return path, "build"


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise DeviceError(f"TensorRT is not installed ({exc}); on a Jetson it comes with JetPack "
                          "(apt-get install python3-libnvinfer), see docs/gpu.md") from None
    return trt


def device_identity() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability); DeviceError when either is missing."""
    trt = _import_tensorrt()
    info = cuda_device_info()
    return trt.__version__, info["name"], info["compute_capability"]


def build_engine(onnx_path, path: Path, key: EngineKey, timing_cache: Path | None = None) -> Path:
    """Parse the ONNX, build with an optimisation profile for batch 1..N, write engine + key."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        chw = tuple(t.shape)[1:]
        if any(d < 0 for d in chw):
            raise ModelError(f"{onnx_path}: input {t.name} must have fixed C, H, W, got {tuple(t.shape)}")
        lo, opt, hi = key.batch_profile
        profile.set_shape(t.name, (lo, *chw), (opt, *chw), (hi, *chw))
    config.add_optimization_profile(profile)
    timing_cache = timing_cache or path.with_name("timing.cache")
    blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)  # False: refuse a cache from another device
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, path)
    sidecar(path).write_text(json.dumps({**key.to_dict(), "onnx": str(onnx_path),
                                         "engine_sha256": file_sha256(path),
                                         "build_s": round(time.monotonic() - t0, 1)}, indent=2))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    log.info("built TensorRT engine %s in %.0f s", path, time.monotonic() - t0)
    return path


class TensorRTBackend:
    """InferenceBackend on a TensorRT engine; ``submit``/``collect`` double-buffer.

    Two slots, each with its own execution context, CUDA stream, pinned host
    buffers and device buffers: while slot k's engine runs, the caller fills
    slot k+1. ``run`` is ``collect(submit(batch))``.
    """

    name = "tensorrt"
    SLOTS = 2

    def __init__(self, onnx_path, max_batch: int = 8, engine_dir=None, fp16: bool = False,
                 rebuild: bool = True):
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ModelError(f"ONNX model {self.onnx_path} does not exist")
        trt = _import_tensorrt()
        version, gpu, cc = device_identity()
        self.max_batch = max_batch
        self.key = make_key(self.onnx_path, version, gpu, cc, fp16, max_batch)
        path, action = resolve_engine(engine_dir, self.onnx_path, self.key, rebuild=rebuild)
        self._ctx = cuda_context
        with self._ctx() as drv:
            if action != "load":
                build_engine(self.onnx_path, path, self.key)
            self.engine_path = path
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise ModelError(f"TensorRT could not deserialize {path}; rebuild it with rig engine build")
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            if len(inputs) != 1:
                raise ModelError(f"{path}: expected one input tensor, found {inputs}")
            self.input_name = inputs[0]
            self.output_names = [n for n in names if n != self.input_name]
            self._slots = [self._make_slot(drv, trt) for _ in range(self.SLOTS)]
        self._next = 0

    def _make_slot(self, drv, trt) -> dict:
        ctx = self.engine.create_execution_context()
        slot = {"context": ctx, "stream": drv.Stream(), "host": {}, "device": {}}
        for name in [self.input_name, *self.output_names]:
            shape = list(self.engine.get_tensor_shape(name))
            shape[0] = self.max_batch
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = drv.pagelocked_empty(tuple(shape), dtype)
            slot["host"][name] = host
            slot["device"][name] = drv.mem_alloc(host.nbytes)
            ctx.set_tensor_address(name, int(slot["device"][name]))
        return slot

    def submit(self, batch: np.ndarray) -> int:
        """Copy ``batch`` into the next slot and enqueue copy-in, inference, copy-out."""
        if batch.ndim != 4 or batch.shape[0] > self.max_batch:
            raise ModelError(f"batch {batch.shape} must be (N<= {self.max_batch}, C, H, W)")
        idx = self._next
        self._next = (self._next + 1) % self.SLOTS
        slot = self._slots[idx]
        n = batch.shape[0]
        with self._ctx() as drv:
            slot["stream"].synchronize()  # the slot's previous batch is finished and collected
            host_in = slot["host"][self.input_name]
            host_in[:n] = batch
            ctx = slot["context"]
            ctx.set_input_shape(self.input_name, (n, *host_in.shape[1:]))
            drv.memcpy_htod_async(slot["device"][self.input_name], host_in[:n], slot["stream"])
            if not ctx.execute_async_v3(slot["stream"].handle):
                raise DeviceError("TensorRT execute_async_v3 failed")
            slot["n"] = n
            for name in self.output_names:
                out = slot["host"][name][:n]
                drv.memcpy_dtoh_async(out, slot["device"][name], slot["stream"])
        return idx

    def collect(self, idx: int) -> dict[str, np.ndarray]:
        slot = self._slots[idx]
        with self._ctx():
            slot["stream"].synchronize()
        n = slot["n"]
        return {name: np.array(slot["host"][name][:n]) for name in self.output_names}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.collect(self.submit(np.ascontiguousarray(batch, np.float32)))

    def describe(self) -> str:
        k = self.key
        return (f"TensorRT {k.tensorrt_version} on {k.gpu_name} (sm {k.compute_capability}), "
                f"{k.precision}, batch 1..{k.batch_profile[2]}, {self.engine_path.name}")


@INFERENCE.register("tensorrt")
def open_tensorrt(onnx_path, *, max_batch: int = 8, threads: int = 2, engine_dir=None, fp16: bool = False):
    return TensorRTBackend(onnx_path, max_batch=max_batch, engine_dir=engine_dir, fp16=fp16)
