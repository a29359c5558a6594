"""Load the CUDA kernels: pycuda on a GPU, or the CPU twin (the same .cu through g++).

Both paths expose one object, :class:`KernelModule`, with
``launch(kernel, grid, block, *args)``. Pointer arguments are plain integers:
device addresses on the GPU, host addresses (``array.ctypes.data``) in the twin.
The typed wrappers that own memory live next to their users
(:mod:`damage_rig.rig.preprocess`, :mod:`damage_rig.kernels.height`,
:mod:`damage_rig.kernels.align`).

The twin runs each launch on ``KernelModule.threads`` host threads (default
:func:`default_twin_threads`); see kernels/twin_shim.h for why that is exact.

Builds are cached under the user cache directory (``$DAMAGE_RIG_CACHE``, else
``$XDG_CACHE_HOME/damage-rig``, else ``~/.cache/damage-rig``), never the
current directory, keyed by a hash of every source byte, the compiler's version
and flags, and (on the GPU) the device architecture. A build is written to a
temporary name and renamed, so concurrent processes never load half a file.

GPU notes: pycuda is imported only inside the cuda functions. The kernels run
in the device's *primary* context, the same one the CUDA runtime (and so
TensorRT) uses; threads push it with :func:`cuda_context` instead of creating
contexts (never ``pycuda.autoinit``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ..rig.foundation.errors import DeviceError

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
SHIM = KERNEL_DIR / "twin_shim.h"
HEADERS = ("common.cuh",)

# -ffp-contract=off: no FMA contraction (aarch64 g++ fuses by default).
# -fvisibility=hidden: only the twin_* launchers are exported, so g++ may inline the
# kernel into the grid loop (an exported kernel is interposable: one PLT call per thread).
TWIN_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden",
              "-Wall", "-Wextra", "-Werror", "-ffp-contract=off")
NVCC_FLAGS = ("-O3", "-Werror", "all-warnings", "-std=c++17")

_C_TYPES = {"ptr": "void*", "int": "int", "float": "float"}
_CTYPES = {"ptr": ctypes.c_void_p, "int": ctypes.c_int, "float": ctypes.c_float}
_PYCUDA_FMT = {"ptr": "P", "int": "i", "float": "f"}


@dataclass(frozen=True)
class KernelSpec:
    """A kernel's name and parameter kinds ("ptr", "int", "float"), in order.

    One declaration serves the ctypes argtypes, the generated twin launcher and
    pycuda's prepared call, so the three cannot drift apart.
    """

    name: str
    params: tuple[str, ...]


# Every kernel of every .cu file, declared once.
MODULES: dict[str, tuple[KernelSpec, ...]] = {
    "preprocess": (
        KernelSpec("preprocess_taps", ("ptr", "int", "ptr")),
        KernelSpec("preprocess_rgb_f32", ("ptr", "ptr", "ptr", "int", "ptr", "int", "int", "int")
                   + ("float",) * 6),
        KernelSpec("preprocess_rgb_f16", ("ptr", "ptr", "ptr", "int", "ptr", "int", "int", "int")
                   + ("float",) * 6),
        KernelSpec("resize_plane_f32", ("ptr", "ptr", "ptr", "int", "ptr", "int", "int", "int",
                                        "int", "float", "float")),
        KernelSpec("resize_plane_f16", ("ptr", "ptr", "ptr", "int", "ptr", "int", "int", "int",
                                        "int", "float", "float")),
    ),
    "height": (
        KernelSpec("height_map", ("ptr", "int", "int", "int") + ("float",) * 9 + ("ptr",)),
    ),
    "align": (
        KernelSpec("align_clear", ("ptr", "int")),
        KernelSpec("align_scatter", ("ptr", "int", "int", "int", "ptr", "int", "ptr")
                   + ("int",) * 4),
        KernelSpec("align_finish", ("ptr", "ptr", "int")),
    ),
}


def cache_dir() -> Path:
    """Where builds are cached (created on demand)."""
    root = os.environ.get("DAMAGE_RIG_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "damage-rig"
    return base


def source_path(module: str) -> Path:
    if module not in MODULES:
        raise DeviceError(f"unknown kernel module {module!r}; known: {sorted(MODULES)}")
    return KERNEL_DIR / f"{module}.cu"


def _source_bytes(module: str) -> bytes:
    parts = [source_path(module).read_bytes()]
    parts += [(KERNEL_DIR / h).read_bytes() for h in HEADERS]
    return b"\0".join(parts)


def _tool_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeviceError(f"cannot run {exe}: {exc}") from None
    return out.stdout.strip()


def _atomic_build(target: Path, build) -> None:
    """Run ``build(tmp_path)`` and rename the result onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        build(Path(tmp))
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _run_compiler(cmd: list[str], what: str) -> None:
    log.debug("compiling %s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeviceError(f"compiling {what} failed ({cmd[0]} exit {proc.returncode}):\n"
                          f"{proc.stderr.strip() or proc.stdout.strip()}")


# ---------------------------------------------------------------- CPU twin

_EXPORT = 'extern "C" __attribute__((visibility("default")))'


def _twin_wrapper(module: str) -> str:
    """C++ source: the shim, the .cu, one exported launcher per kernel, and the thread setter."""
    lines = [f'#include "{source_path(module).name}"', "",
             f"{_EXPORT} void twin_set_threads(int n) {{ twin::threads = n; }}"]
    for spec in MODULES[module]:
        params = ", ".join(f"{_C_TYPES[k]} a{i}" for i, k in enumerate(spec.params))
        args = ", ".join(f"a{i}" for i in range(len(spec.params)))
        lines.append(
            f"{_EXPORT} void twin_{spec.name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, "
            f"unsigned by, unsigned bz, {params}) {{\n"
            f"    twin::launch(dim3(gx, gy, gz), dim3(bx, by, bz), [=] {{ twin::call({spec.name}, {args}); }});\n}}")
    return "\n".join(lines) + "\n"


def _cpu_has_f16c() -> bool:
    """Whether this x86 CPU converts float->half in hardware (Linux: /proc/cpuinfo flags).

    Checked when the twin is built, on the machine that runs it (builds live in the
    user's cache and the flag is part of the cache key), so a twin built here never
    meets a CPU without the instruction. Anything else keeps the portable software
    conversion in twin_shim.h.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "f16c" in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def twin_flags() -> tuple[str, ...]:
    """g++ flags for the CPU twin on this machine (TWIN_FLAGS plus -mf16c where the CPU has it)."""
    return TWIN_FLAGS + (("-mf16c",) if _cpu_has_f16c() else ())


def default_twin_threads() -> int:
    """Host threads per twin launch: $DAMAGE_RIG_TWIN_THREADS, else the CPUs this process
    may run on (what OpenCV's default uses too), at most 16."""
    env = os.environ.get("DAMAGE_RIG_TWIN_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise DeviceError(f"DAMAGE_RIG_TWIN_THREADS must be a whole number, got {env!r}") from None
        if n < 1:
            raise DeviceError(f"DAMAGE_RIG_TWIN_THREADS must be at least 1, got {n}")
        return n
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def find_cxx() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


class KernelModule:
    """Loaded kernels of one .cu file; ``launch`` is the same call on both backends."""

    def __init__(self, module: str, backend: str, functions: dict, path: Path):
        self.module = module
        self.backend = backend  # "twin" or "cuda"
        self._functions = functions
        self.path = path
        self.threads = 1  # host threads per twin launch (see set_threads)
        self._set_threads = None

    def set_threads(self, n: int) -> None:
        """Host threads per launch of the CPU twin (1 = serial); no effect on the GPU."""
        if self.backend == "twin":
            if int(n) < 1:
                raise DeviceError(f"twin threads must be at least 1, got {n}")
            self._set_threads(int(n))
            self.threads = int(n)

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], *args,
               stream=None) -> None:
        """Run ``kernel<<<grid, block>>>(*args)``; the twin returns when it is done."""
        try:
            fn = self._functions[kernel]
        except KeyError:
            raise DeviceError(f"kernel {kernel!r} is not in module {self.module!r}") from None
        g = tuple(grid) + (1,) * (3 - len(grid))
        b = tuple(block) + (1,) * (3 - len(block))
        if self.backend == "twin":
            fn(*g, *b, *args)
        else:
            fn.prepared_async_call(g, b, stream, *args)


_lock = threading.Lock()
_loaded: dict[tuple[str, str], KernelModule] = {}


def load_twin(module: str) -> KernelModule:
    """Build (once, cached on disk) and load the CPU twin of ``kernels/<module>.cu``."""
    with _lock:
        if (module, "twin") in _loaded:
            return _loaded[(module, "twin")]
        cxx = find_cxx()
        if cxx is None:
            raise DeviceError("the CPU twin needs a C++ compiler (g++); install it "
                              "(Debian/Ubuntu: apt-get install g++) or use preprocess backend 'opencv'")
        wrapper = _twin_wrapper(module)
        flags = twin_flags()
        h = hashlib.sha256()
        for part in (SHIM.read_bytes(), _source_bytes(module), wrapper.encode(),
                     " ".join(flags).encode(), _tool_version(cxx).encode()):
            h.update(part)
            h.update(b"\0")
        lib_path = cache_dir() / "twin" / f"{module}-{h.hexdigest()[:20]}.so"
        if not lib_path.is_file():
            with tempfile.TemporaryDirectory(prefix="damage-rig-twin-") as tmpdir:
                src = Path(tmpdir) / f"{module}_twin.cpp"
                src.write_text(wrapper)

                def build(out: Path) -> None:
                    _run_compiler([cxx, *flags, "-include", str(SHIM), f"-I{KERNEL_DIR}",
                                   str(src), "-o", str(out)], f"CPU twin of {module}.cu")

                _atomic_build(lib_path, build)
            log.info("built CPU twin %s", lib_path)
        lib = ctypes.CDLL(str(lib_path))
        functions = {}
        for spec in MODULES[module]:
            fn = getattr(lib, f"twin_{spec.name}")
            fn.restype = None
            fn.argtypes = [ctypes.c_uint] * 6 + [_CTYPES[k] for k in spec.params]
            functions[spec.name] = fn
        km = KernelModule(module, "twin", functions, lib_path)
        km._set_threads = lib.twin_set_threads
        km._set_threads.restype = None
        km._set_threads.argtypes = [ctypes.c_int]
        km.set_threads(default_twin_threads())
        _loaded[(module, "twin")] = km
        return km


# ---------------------------------------------------------------- GPU (pycuda)

def find_nvcc() -> str | None:
    cand = shutil.which("nvcc")
    if cand:
        return cand
    for p in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if os.access(p, os.X_OK):
            return p
    return None


def nvcc_compile(module: str, arch: str, out: Path, fmt: str = "cubin") -> str:
    """Compile ``kernels/<module>.cu`` for ``arch`` (e.g. "sm_87"); return the compiler's
    stderr (empty when there were no warnings; -Werror makes warnings fail anyway)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise DeviceError("nvcc not found: install the CUDA toolkit (on JetPack: "
                          "apt-get install cuda-toolkit-12-6) or put nvcc on PATH")
    cmd = [nvcc, f"-{fmt}", f"-arch={arch}", *NVCC_FLAGS, f"-I{KERNEL_DIR}",
           str(source_path(module)), "-o", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeviceError(f"nvcc failed on {module}.cu for {arch}:\n{proc.stderr.strip()}")
    return proc.stderr.strip()


_cuda_state: dict = {}


def _cuda():
    """Import pycuda and retain the device's primary context (once per process)."""
    if "ctx" in _cuda_state:
        return _cuda_state["drv"], _cuda_state["ctx"]
    try:
        import pycuda.driver as drv
    except ImportError as exc:
        raise DeviceError(f"the cuda backend needs pycuda ({exc}); on a Jetson build it with "
                          "'pip install pycuda' after JetPack's CUDA is installed (docs/gpu.md)") from None
    try:
        drv.init()
        if drv.Device.count() == 0:
            raise DeviceError("no CUDA GPU found (pycuda sees 0 devices)")
        dev = drv.Device(0)
        ctx = dev.retain_primary_context()
    except drv.Error as exc:
        raise DeviceError(f"CUDA driver unavailable: {exc}") from None
    _cuda_state.update(drv=drv, ctx=ctx, dev=dev)
    return drv, ctx


@contextlib.contextmanager
def cuda_context():
    """Make the shared primary context current on this thread for the block."""
    drv, ctx = _cuda()
    ctx.push()
    try:
        yield drv
    finally:
        drv.Context.pop()


def cuda_device_info() -> dict:
    """Name and compute capability of GPU 0 (raises DeviceError without one)."""
    _cuda()
    dev = _cuda_state["dev"]
    major, minor = dev.compute_capability()
    return {"name": dev.name(), "compute_capability": f"{major}.{minor}", "arch": f"sm_{major}{minor}"}


def load_cuda(module: str) -> KernelModule:
    """Compile (cached) for this GPU's architecture and load with pycuda."""
    with _lock:
        if (module, "cuda") in _loaded:
            return _loaded[(module, "cuda")]
        info = cuda_device_info()
        nvcc = find_nvcc()
        h = hashlib.sha256()
        for part in (_source_bytes(module), " ".join(NVCC_FLAGS).encode(),
                     _tool_version(nvcc).encode() if nvcc else b"", info["arch"].encode()):
            h.update(part)
            h.update(b"\0")
        cubin = cache_dir() / "cuda" / f"{module}-{h.hexdigest()[:20]}-{info['arch']}.cubin"
        if not cubin.is_file():
            _atomic_build(cubin, lambda out: nvcc_compile(module, info["arch"], out))
            log.info("built %s for %s: %s", module, info["arch"], cubin)
        with cuda_context() as drv:
            mod = drv.module_from_file(str(cubin))
            functions = {}
            for spec in MODULES[module]:
                fn = mod.get_function(spec.name)
                fn.prepare("".join(_PYCUDA_FMT[k] for k in spec.params))
                functions[spec.name] = fn
        km = KernelModule(module, "cuda", functions, cubin)
        km._pycuda_module = mod  # keep the module alive as long as its functions
        _loaded[(module, "cuda")] = km
        return km


def load(module: str, backend: str) -> KernelModule:
    if backend == "twin":
        return load_twin(module)
    if backend == "cuda":
        return load_cuda(module)
    raise DeviceError(f"kernel backend must be 'twin' or 'cuda', got {backend!r}")
