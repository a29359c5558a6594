"""Inference backends: one file per backend, each registering itself, one fallback chain.

Every backend satisfies :class:`damage_rig.rig.infer.base.InferenceBackend`:
``run(batch) -> {output name: array}`` on a float32 NCHW batch of at most
``max_batch`` images. ``INFERENCE`` holds them by name (the config's
``inference.backend`` choices); ``make_backend`` is the only place that knows the
chain (tensorrt -> onnxruntime when fallback is allowed) and logs what it chose.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..foundation.errors import DeviceError
from ..foundation.registry import Registry
from .base import InferenceBackend

log = logging.getLogger(__name__)

INFERENCE = Registry("inference backend", __name__)
FALLBACK = "onnxruntime"  # runs everywhere the rig runs (CPU)


def make_backend(name: str, onnx_path: str | Path, *, max_batch: int = 8, threads: int = 2,
                 allow_fallback: bool = True, engine_dir: str | Path | None = None,
                 fp16: bool = False) -> InferenceBackend:
    """Build the requested backend; when it is unavailable here fall back to ONNX Runtime if allowed."""
    try:
        make = INFERENCE.get(name)
    except KeyError:
        raise DeviceError(f"unknown inference backend {name!r}; choose one of {list(INFERENCE.names())}") \
            from None
    opts = dict(max_batch=max_batch, threads=threads, engine_dir=engine_dir, fp16=fp16)
    if name != FALLBACK:
        try:
            backend = make(onnx_path, **opts)
            log.info("inference backend: %s (%s)", name, backend.describe())
            return backend
        except (DeviceError, ImportError) as exc:
            if not allow_fallback:
                raise DeviceError(f"inference backend {name!r} requested but unavailable: {exc}; "
                                  f"set inference.allow_fallback: true to use {FALLBACK} instead") from exc
            log.warning("%s unavailable (%s); falling back to %s on the CPU", name, exc, FALLBACK)
    backend = INFERENCE.get(FALLBACK)(onnx_path, **opts)
    log.info("inference backend: %s (%s)", FALLBACK, backend.describe())
    return backend
