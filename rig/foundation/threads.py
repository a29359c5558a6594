"""One owner per core: the libraries' thread pools, set once when a rig starts.

On 2 cores, OpenBLAS (numpy), ONNX Runtime (which also spins after each run),
OpenCV and the kernels' CPU twin each default to a thread per core and fight
over them: one anomaly matmul went from ~1 ms to 27 ms. A rig gives each core
one owner: its stage threads, and ONNX Runtime's intra-op pool (size from the
config, spinning off — rig/infer/onnxruntime.py). BLAS and OpenCV run on the
calling stage thread.

threadpoolctl is not a dependency: the BLAS setting goes through OpenBLAS's own
C entry point, found among the libraries this process has loaded (numpy's
wheels bundle it as ``libscipy_openblas``), and through the environment for
processes started by `rig run`, `rig demo` and `rig bench` (rig/cli.py sets it
before numpy loads). Imports nothing of the project.
"""

from __future__ import annotations

import ctypes
import gc
import os

#: read by OpenBLAS / OpenMP / MKL when they load (must be set before numpy is imported)
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: OpenBLAS's setter and getter, as the builds name them (plain, 64-bit interface, numpy's scipy_openblas)
_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads")
_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads")


def blas_env(threads: int = 1) -> None:
    """Ask BLAS for ``threads`` threads through the environment (only effective before numpy loads;
    a value already set by the operator is kept)."""
    for name in BLAS_ENV:
        os.environ.setdefault(name, str(threads))


def _openblas_libs() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:  # not Linux: the environment is all there is
        return []
    return sorted(p for p in paths if os.path.isfile(p))


def _symbol(lib, names):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def blas_threads(threads: int | None = None) -> int | None:
    """Set (when ``threads`` is given) and return OpenBLAS's thread count in this process;
    None when no OpenBLAS is loaded (or it has no such entry point)."""
    if threads is not None and threads < 1:
        raise ValueError(f"BLAS threads must be at least 1, got {threads}")
    found = None
    for path in _openblas_libs():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter, getter = _symbol(lib, _SETTERS), _symbol(lib, _GETTERS)
        if threads is not None and setter is not None:
            setter.argtypes = [ctypes.c_int]
            setter(int(threads))
        if getter is not None:
            getter.restype = ctypes.c_int
            found = int(getter())
    return found


def one_owner_per_core(blas: int = 1, opencv: int = 1) -> dict:
    """Single-threaded BLAS and OpenCV in this process (they run on the calling stage's thread);
    returns what is now in force."""
    import cv2

    n_blas = blas_threads(blas)
    cv2.setNumThreads(int(opencv))
    return {"blas_threads": n_blas, "opencv_threads": cv2.getNumThreads()}


def freeze_heap() -> int:
    """After start-up: collect once, then move every object alive now out of the collector's sight
    (``gc.freeze``), so a later full collection walks only what the running rig allocates.
    Returns how many objects were frozen; ``gc.unfreeze()`` when the rig stops."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
