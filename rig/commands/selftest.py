"""`rig selftest`: prove on this machine what can be proven here, list what was skipped and why.

Checks (each PASS, FAIL or SKIP with a reason):
  twin-build        the .cu kernels build with g++ through the shim
  twin-preprocess   CPU twin vs OpenCV: max abs error <= 1e-5 (fp32), <= 1 fp16 step (fp16)
  twin-height       CPU twin height map vs the numpy reference (<= 1e-3 mm)
  twin-align        CPU twin alignment identical to calibration.align (every pixel)
  nvcc              every .cu compiles for the GPU arch (sm_87 without a GPU) with no warnings
  onnx-ops          the model's ONNX uses only operators TensorRT's parser supports
  cpu-timing        OpenCV vs twin preprocess time, 8 ROIs from 1280x720 at 224 px (figures)
  gpu-*             kernel vs twin parity, kernel time for 8 ROIs (target < 1 ms),
                    TensorRT vs ONNX Runtime outputs on the same inputs
Exit 0 when every check that ran passed.
"""

from __future__ import annotations

NAME = "selftest"
HELP = "check kernels, twin, TensorRT and timings on this machine; print a verdict"

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FP16_TOL = 0.05   # TensorRT fp16 vs ONNX Runtime fp32: max abs diff relative to max |output|
FP32_TOL = 1e-3


def add_arguments(p):
    p.add_argument("--model", default="shipped",
                   help="model directory for the ONNX checks (default: the shipped model)")
    p.add_argument("--fp16", action="store_true", help="compare a fp16 TensorRT engine (default fp32)")


class _Report:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, status: str, detail: str) -> None:
        self.rows.append((name, status, detail))
        print(f"  {status:<5} {name:<16} {detail}", flush=True)

    def check(self, name: str, fn) -> None:
        """Run fn() -> (status, detail); a RigError or failed assertion is a FAIL."""
        from ..foundation.errors import RigError

        try:
            status, detail = fn()
        except (RigError, AssertionError, OSError, ValueError) as exc:
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
        self.add(name, status, detail)


def _rois(rng, w, h, n):
    out = []
    for _ in range(n):
        rw, rh = int(rng.integers(64, min(w, 640))), int(rng.integers(64, min(h, 640)))
        x0, y0 = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
        out.append((x0, y0, x0 + rw, y0 + rh))
    return out


def _frames(rng):
    import numpy as np

    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(2)]
    return [frames[i % 2] for i in range(8)], _rois(rng, 1280, 720, 8)


def _preprocess_parity(backend: str, against: str = "opencv"):
    import numpy as np

    from ..preprocess import make_preprocessor

    rng = np.random.default_rng(7)
    images, rois = _frames(rng)
    worst = 0.0
    for dtype in (np.float32, np.float16):
        got = np.full((9, 4, 224, 224), np.nan, dtype)
        ref = np.full((9, 4, 224, 224), np.nan, np.float32)
        make_preprocessor(backend, 224, MEAN, STD).run(images, rois, got, start=1)
        make_preprocessor(against, 224, MEAN, STD).run(images, rois, ref, start=1)
        assert not np.isnan(got[1:, :3]).any(), f"{dtype.__name__}: unwritten output elements"
        assert np.isnan(got[0]).all() and np.isnan(got[:, 3]).all(), "wrote outside its slots"
        err = np.abs(got[1:, :3].astype(np.float32) - ref[1:, :3])
        if dtype == np.float32:
            worst = float(err.max())
            assert worst <= 1e-5, f"fp32 max abs error {worst:.2e} > 1e-5"
        else:
            step = np.abs(np.spacing(np.abs(ref[1:, :3]).astype(np.float16))).astype(np.float32)
            assert (err <= step + 1e-5).all(), "fp16 output further than one fp16 step"
    return "PASS", f"8 ROIs of 1280x720 at 224: fp32 max abs err {worst:.1e} (<= 1e-5), fp16 within 1 step"


def _height(backend: str):
    import numpy as np

    from ...kernels.height import height_map, height_map_reference

    rng = np.random.default_rng(3)
    depth = rng.integers(300, 3000, (480, 640)).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.05] = 0
    K = np.array([[600.0, 0, 320.5], [0, 600.0, 240.5], [0, 0, 1]])
    n = np.array([0.02, -0.05, -1.0])
    n /= np.linalg.norm(n)
    got = height_map(depth, 0.001, K, n, 1.2, backend=backend)
    ref = height_map_reference(depth, 0.001, K, n, 1.2)
    assert (np.isnan(got) == np.isnan(ref)).all(), "NaN (no reading) pixels differ"
    err = float(np.nanmax(np.abs(got - ref)))
    assert err <= 1e-3, f"max error {err:.2e} mm > 1e-3"
    return "PASS", f"640x480: max error {err:.1e} mm vs float64 reference"


def _align(backend: str):
    import numpy as np

    try:
        from ...calibration.align import align_depth_to_color as reference
    except ImportError:
        return "SKIP", "damage_rig.calibration.align is not installed"
    from ...kernels.align import align_depth_to_color
    from ...tools.sim.rigs import jetson_3cam_calibration

    cam = jetson_3cam_calibration().cameras["top"]
    dm = cam.depth
    w, h = dm.size
    yy, xx = np.mgrid[0:h, 0:w]
    depth = (700 + 150 * np.sin(xx / 37.0) + 90 * np.cos(yy / 23.0)).astype(np.uint16)
    depth[np.random.default_rng(1).random(depth.shape) < 0.05] = 0
    args = (depth, dm.K, cam.K, cam.size, dm.T_color_depth, dm.depth_units_mm / 1000.0)
    want = reference(*args)
    got = align_depth_to_color(*args, backend=backend)
    bad = int((got != want).sum())
    assert bad == 0, f"{bad} of {want.size} pixels differ from calibration.align"
    return "PASS", f"{w}x{h} -> {cam.size[0]}x{cam.size[1]}: identical on every pixel"


def _nvcc(arch: str):
    import tempfile
    from pathlib import Path

    from ...kernels import loader

    if loader.find_nvcc() is None:
        return "SKIP", "nvcc not found (CUDA toolkit not installed)"
    with tempfile.TemporaryDirectory() as tmp:
        for module in loader.MODULES:
            stderr = loader.nvcc_compile(module, arch, Path(tmp) / f"{module}.cubin")
            assert "warning" not in stderr.lower(), f"{module}.cu: {stderr}"
    return "PASS", f"{', '.join(m + '.cu' for m in loader.MODULES)} for {arch}, no warnings"


def _onnx_ops(model: str):
    from ..foundation.errors import ModelError
    from .engine import model_onnx

    try:
        from ...models.onnx_ops import check_onnx
    except ImportError:
        return "SKIP", "damage_rig.models.onnx_ops is not installed"
    try:
        onnx = model_onnx(model)
    except ModelError as exc:  # a missing model is a skip here, not a failure of the machine
        return "SKIP", f"no model to check: {exc}"
    ops = check_onnx(onnx)
    return "PASS", f"{onnx}: {len(ops)} operator types, all supported"


def _cpu_timing():
    import time

    import numpy as np

    from ..preprocess import make_preprocessor

    images, rois = _frames(np.random.default_rng(11))
    out = np.zeros((8, 4, 224, 224), np.float32)
    med = {}
    for name in ("opencv", "twin"):
        pre = make_preprocessor(name, 224, MEAN, STD)
        pre.run(images, rois, out)
        ts = []
        for _ in range(15):
            t0 = time.monotonic()
            pre.run(images, rois, out)
            ts.append(time.monotonic() - t0)
        med[name] = float(np.median(ts)) * 1e3
    return "INFO", (f"8 ROIs at 224: opencv {med['opencv']:.2f} ms, twin {med['twin']:.2f} ms "
                    f"(ratio {med['twin'] / med['opencv']:.2f})")


def _gpu_timing():
    import numpy as np

    from ..preprocess import make_preprocessor

    images, rois = _frames(np.random.default_rng(12))
    out = np.zeros((8, 4, 224, 224), np.float32)
    pre = make_preprocessor("cuda", 224, MEAN, STD)
    pre.run(images, rois, out)
    ms = pre._gpu.time_last_kernel()
    status = "PASS" if ms < 1.0 else "FAIL"
    return status, f"fused preprocess kernel, 8 ROIs at 224: {ms:.3f} ms (target < 1 ms)"


def _trt_vs_ort(model: str, fp16: bool):
    import numpy as np

    from ..infer.onnxruntime import OnnxRuntimeBackend
    from ..infer.tensorrt import TensorRTBackend
    from .engine import model_onnx

    onnx = model_onnx(model)
    trt = TensorRTBackend(onnx, max_batch=4, fp16=fp16)
    ort = OnnxRuntimeBackend(onnx, max_batch=4)
    shape = [4, *ort.input_shape[1:]]
    batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a, b = trt.run(batch), ort.run(batch)
    tol = FP16_TOL if fp16 else FP32_TOL
    worst = []
    for name in ort.output_names:
        scale = max(float(np.abs(b[name]).max()), 1e-6)
        rel = float(np.abs(a[name].astype(np.float32) - b[name]).max()) / scale
        worst.append((rel, name))
        assert rel <= tol, f"{name}: max abs diff {rel:.2e} x max|out| > {tol}"
    rel, name = max(worst)
    return "PASS", f"{trt.describe()}: worst {name} {rel:.1e} of max|out| (tol {tol})"


def run(args) -> int:
    from ...kernels import loader
    from ..foundation.errors import DeviceError

    report = _Report()
    print("rig selftest")
    try:
        info = loader.cuda_device_info()
        gpu = True
        print(f"GPU: {info['name']} (compute capability {info['compute_capability']})")
    except DeviceError as exc:
        gpu, info = False, {"arch": "sm_87"}
        print(f"GPU: none ({exc}); GPU checks are skipped, CPU-twin checks run")

    def twin_build():
        for m in loader.MODULES:
            loader.load_twin(m)
        return "PASS", f"{len(loader.MODULES)} modules built with g++ via twin_shim.h"

    report.check("twin-build", twin_build)
    report.check("twin-preprocess", lambda: _preprocess_parity("twin"))
    report.check("twin-height", lambda: _height("twin"))
    report.check("twin-align", lambda: _align("twin"))
    report.check("nvcc", lambda: _nvcc(info["arch"]))
    report.check("onnx-ops", lambda: _onnx_ops(args.model))
    report.check("cpu-timing", _cpu_timing)
    gpu_checks = [
        ("gpu-preprocess", lambda: _preprocess_parity("cuda", against="twin")),
        ("gpu-height", lambda: _height("cuda")),
        ("gpu-align", lambda: _align("cuda")),
        ("gpu-timing", _gpu_timing),
    ]
    for name, fn in gpu_checks:
        if gpu:
            report.check(name, fn)
        else:
            report.add(name, "SKIP", "no CUDA GPU/pycuda on this machine")
    try:
        import tensorrt  # noqa: F401

        have_trt = True
    except ImportError:
        have_trt = False
    if gpu and have_trt:
        report.check("gpu-tensorrt", lambda: _trt_vs_ort(args.model, args.fp16))
    else:
        report.add("gpu-tensorrt", "SKIP", "TensorRT not installed" if not have_trt
                   else "no CUDA GPU on this machine")

    counts = {s: sum(1 for _, st, _ in report.rows if st == s) for s in ("PASS", "FAIL", "SKIP")}
    verdict = "FAIL" if counts["FAIL"] else "PASS"
    print(f"verdict: {verdict} ({counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped)")
    return 1 if counts["FAIL"] else 0
