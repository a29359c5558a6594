"""Run a kernel on host arrays, on the CPU twin or the GPU, with the same call.

The twin gets host addresses directly. On the GPU each array is copied into a
device buffer, the kernels run, and the arrays named as outputs are copied back;
the path of the trigger's height map and the per-view depth alignment. Device
buffers are allocated once per (module, argument) and reused by every later
call (grown when a larger ROI comes, which stops after the first few items), so
a call costs its copies and launches, not an allocation; ``scratch`` arrays (a z-buffer the
kernels clear themselves) are not copied at all.
"""

from __future__ import annotations

import threading

import numpy as np

from .loader import cuda_context, load

_device_lock = threading.Lock()
_device: dict[tuple, tuple] = {}  # (module, argument no.) -> (pycuda DeviceAllocation, bytes), kept


class Arg:
    """A numpy array kernel argument; ``out=True`` copies it back after a GPU run; ``scratch=True``
    never copies it to the device (the kernels write it before they read it)."""

    def __init__(self, array: np.ndarray, out: bool = False, scratch: bool = False):
        self.array = np.ascontiguousarray(array)
        self.out = out
        self.scratch = scratch


def run_kernels(module: str, backend: str, launches: list[tuple]) -> None:
    """``launches``: (kernel, grid, block, args...) tuples run in order; an ``Arg`` stands
    for an array (the same Arg object in several launches is the same buffer)."""
    mod = load(module, backend)
    if backend == "twin":
        for kernel, grid, block, *args in launches:
            mod.launch(kernel, grid, block,
                       *(a.array.ctypes.data if isinstance(a, Arg) else a for a in args))
        return
    with _device_lock, cuda_context() as drv:
        dev: dict[int, object] = {}
        for _, _, _, *args in launches:
            for a in args:
                if isinstance(a, Arg) and id(a) not in dev:
                    key = (module, len(dev))
                    buf, size = _device.get(key, (None, 0))
                    if buf is None or size < a.array.nbytes:  # grows to the largest ROI, then stays
                        size = max(a.array.nbytes, 1)
                        buf = drv.mem_alloc(size)
                        _device[key] = (buf, size)
                    if not a.scratch:
                        drv.memcpy_htod(buf, a.array)
                    dev[id(a)] = buf
        for kernel, grid, block, *args in launches:
            mod.launch(kernel, grid, block, *(int(dev[id(a)]) if isinstance(a, Arg) else a for a in args))
        drv.Context.synchronize()
        seen = set()
        for _, _, _, *args in launches:
            for a in args:
                if isinstance(a, Arg) and a.out and id(a) not in seen:
                    seen.add(id(a))
                    drv.memcpy_dtoh(a.array, dev[id(a)])
