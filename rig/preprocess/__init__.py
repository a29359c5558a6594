"""Preprocessing: crop each ROI, bilinear-resize it to size x size, normalise, HWC -> CHW.

One backend per file, each registering itself in ``PREPROCESS`` (the config's
``preprocess.backend`` choices):

* ``opencv`` (default, opencv.py): cv2.resize + numpy on the CPU -- the reference path;
* ``twin`` (kernel.py): the CUDA kernel in kernels/preprocess.cu compiled for the CPU (g++ + shim);
* ``cuda`` (kernel.py): the same kernel on the GPU through pycuda.

All three write the same numbers (max abs difference <= 1e-5 in float32) into the
caller's (N, C, size, size) batch buffer; see :class:`Preprocessor` for the contract.
reference.py holds the CPU reference preprocessing of one view crop (RGB and
relative height) that `rig eval` and the runtime's depth channel share.
"""

from __future__ import annotations

from ..foundation.errors import DeviceError
from ..foundation.registry import Registry
from .base import Preprocessor

PREPROCESS = Registry("preprocess backend", __name__)

__all__ = ["PREPROCESS", "Preprocessor", "make_preprocessor"]


def make_preprocessor(backend: str, size: int, mean: tuple[float, float, float],
                      std: tuple[float, float, float]) -> Preprocessor:
    """The preprocessor named ``backend``; DeviceError when it cannot run here."""
    try:
        make = PREPROCESS.get(backend)
    except KeyError:
        raise DeviceError(f"unknown preprocess backend {backend!r}; choose one of {list(PREPROCESS.names())}") \
            from None
    return make(size, mean, std)
