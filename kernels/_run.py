"""Run a kernel on host arrays, on the CPU twin or the GPU, with the same call.

The twin gets host addresses directly. On the GPU each array is copied to the
device, the kernels run, and the arrays named as outputs are copied back; it is
the simple path for checks and for the trigger's small depth images, not for
the batch buffer (see rig.preprocess.kernel for that).
"""

from __future__ import annotations

import numpy as np

from .loader import cuda_context, load


class Arg:
    """A numpy array kernel argument; ``out=True`` copies it back after a GPU run."""

    def __init__(self, array: np.ndarray, out: bool = False):
        self.array = np.ascontiguousarray(array)
        self.out = out


def run_kernels(module: str, backend: str, launches: list[tuple]) -> None:
    """``launches``: (kernel, grid, block, args...) tuples run in order; an ``Arg`` stands
    for an array (the same Arg object in several launches is the same buffer)."""
    mod = load(module, backend)
    if backend == "twin":
        for kernel, grid, block, *args in launches:
            mod.launch(kernel, grid, block,
                       *(a.array.ctypes.data if isinstance(a, Arg) else a for a in args))
        return
    with cuda_context() as drv:
        dev: dict[int, object] = {}
        for _, _, _, *args in launches:
            for a in args:
                if isinstance(a, Arg) and id(a) not in dev:
                    dev[id(a)] = drv.to_device(a.array)
        for kernel, grid, block, *args in launches:
            mod.launch(kernel, grid, block, *(int(dev[id(a)]) if isinstance(a, Arg) else a for a in args))
        drv.Context.synchronize()
        seen = set()
        for _, _, _, *args in launches:
            for a in args:
                if isinstance(a, Arg) and a.out and id(a) not in seen:
                    seen.add(id(a))
                    drv.memcpy_dtoh(a.array, dev[id(a)])
