"""Preprocessing: crop each ROI, bilinear-resize it to size x size, normalise, HWC -> CHW.

The runtime builds one preprocessor from the config key ``preprocess.backend``:

* ``opencv`` (default): cv2.resize + numpy on the CPU -- the reference path;
* ``twin``: the CUDA kernel in kernels/preprocess.cu compiled for the CPU (g++ + shim);
* ``cuda``: the same kernel on the GPU through pycuda.

All three write the same numbers (max abs difference <= 1e-5 in float32) into the
caller's (N, C, size, size) batch buffer; see :class:`Preprocessor` for the contract.
"""

from __future__ import annotations

from ...rig.errors import DeviceError
from .base import Preprocessor

BACKENDS = ("opencv", "twin", "cuda")

__all__ = ["BACKENDS", "Preprocessor", "make_preprocessor"]


def make_preprocessor(backend: str, size: int, mean: tuple[float, float, float],
                      std: tuple[float, float, float]) -> Preprocessor:
    """The preprocessor named ``backend``; DeviceError when it cannot run here."""
    if backend == "opencv":
        from .opencv import OpenCVPreprocessor

        return OpenCVPreprocessor(size, mean, std)
    if backend == "twin":
        from .kernel import KernelPreprocessor

        return KernelPreprocessor("twin", size, mean, std)
    if backend == "cuda":
        from .kernel import KernelPreprocessor

        return KernelPreprocessor("cuda", size, mean, std)
    raise DeviceError(f"unknown preprocess backend {backend!r}; choose one of {list(BACKENDS)}")
