"""Inference backends: one file per backend, chosen by config, one fallback chain.

Every backend satisfies :class:`damage_rig.rig.infer.base.InferenceBackend`:
``run(batch) -> {output name: array}`` on a float32 NCHW batch of at most
``max_batch`` images. ``make_backend`` is the only place that knows the chain
(tensorrt -> onnxruntime when fallback is allowed) and logs what it chose.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DeviceError
from .base import InferenceBackend

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "tensorrt")


def make_backend(name: str, onnx_path: str | Path, *, max_batch: int = 8, threads: int = 2,
                 allow_fallback: bool = True, engine_dir: str | Path | None = None,
                 fp16: bool = False) -> InferenceBackend:
    """Build the requested backend; on a missing TensorRT fall back to ONNX Runtime if allowed."""
    if name not in BACKENDS:
        raise DeviceError(f"unknown inference backend {name!r}; choose one of {list(BACKENDS)}")
    if name == "tensorrt":
        try:
            from .tensorrt import TensorRTBackend
            backend = TensorRTBackend(onnx_path, max_batch=max_batch, engine_dir=engine_dir, fp16=fp16)
            log.info("inference backend: tensorrt (%s)", backend.describe())
            return backend
        except (DeviceError, ImportError) as exc:
            if not allow_fallback:
                raise DeviceError(f"inference backend 'tensorrt' requested but unavailable: {exc}; "
                                  "set inference.allow_fallback: true to use onnxruntime instead") from exc
            log.warning("tensorrt unavailable (%s); falling back to onnxruntime on the CPU", exc)
    from .onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(onnx_path, max_batch=max_batch, threads=threads)
    log.info("inference backend: onnxruntime (%s)", backend.describe())
    return backend
