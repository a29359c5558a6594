"""NVTX ranges on the GPU path, so Nsight Systems shows the rig's stages next to the CUDA work.

NVTX is only meaningful where a GPU profiler listens, and it is optional: the
``nvtx`` Python package (NVIDIA's) is used when installed, otherwise the
CUDA toolkit's ``libnvToolsExt.so.1`` through ctypes; without either every
range is a no-op, so the bench code is the same everywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging

log = logging.getLogger(__name__)

_impl = None  # (push, pop) or False when none was found


def _load():
    global _impl
    if _impl is not None:
        return _impl
    try:
        import nvtx  # NVIDIA's package: pip install nvtx

        _impl = (lambda msg: nvtx.push_range(msg), lambda: nvtx.pop_range())
        log.info("NVTX ranges through the nvtx package")
        return _impl
    except ImportError:
        pass
    for name in ("libnvToolsExt.so.1", "libnvToolsExt.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.nvtxRangePushA.argtypes = [ctypes.c_char_p]
        _impl = (lambda msg, lib=lib: lib.nvtxRangePushA(msg.encode()), lambda lib=lib: lib.nvtxRangePop())
        log.info("NVTX ranges through %s", name)
        return _impl
    _impl = False
    return _impl


def available() -> bool:
    return bool(_load())


@contextlib.contextmanager
def nvtx_range(message: str):
    """An NVTX push/pop range around the block (no-op without NVTX)."""
    impl = _load()
    if not impl:
        yield
        return
    impl[0](message)
    try:
        yield
    finally:
        impl[1]()


class NvtxBackend:
    """An inference backend whose every run is an NVTX range ``infer[N]``; everything else passes through."""

    def __init__(self, inner):
        self._inner = inner

    def run(self, batch):
        with nvtx_range(f"infer[{len(batch)}]"):
            return self._inner.run(batch)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class NvtxPreprocessor:
    """A preprocessor whose every run is an NVTX range ``preprocess``."""

    def __init__(self, inner):
        self._inner = inner

    def run(self, *args, **kwargs):
        with nvtx_range("preprocess"):
            return self._inner.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)
