"""The CPU twin's speed-ups must not change a single output bit.

* Launches split over host threads give the same bytes as the serial loop
  (one output per thread; atomicMin is order-independent).
* The shim's two float->half conversions (F16C instruction, portable software)
  both equal numpy's round-to-nearest-even on normals, subnormals, ties and
  overflow; the preprocess tests only reach the one this machine builds.
"""

import ctypes
import subprocess

import numpy as np
import pytest
from damage_rig.kernels import loader
from damage_rig.rig.preprocess import make_preprocessor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture
def twin_threads():
    """Set a module's host-thread count for one test, then restore the default."""
    touched = []

    def set_threads(module, n):
        mod = loader.load_twin(module)
        touched.append(mod)
        mod.set_threads(n)

    yield set_threads
    for mod in touched:
        mod.set_threads(loader.default_twin_threads())


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_preprocess_is_identical_on_1_2_and_3_threads(twin_threads, dtype):
    rng = np.random.default_rng(20)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(2)]
    images = [frames[i % 2] for i in range(8)]
    rois = []
    for _ in range(8):
        w, h = int(rng.integers(30, 700)), int(rng.integers(30, 700))
        x0, y0 = int(rng.integers(0, 1280 - w)), int(rng.integers(0, 720 - h))
        rois.append((x0, y0, x0 + w, y0 + h))
    pre = make_preprocessor("twin", 224, MEAN, STD)
    outs = []
    for n in (1, 2, 3):
        twin_threads("preprocess", n)
        out = np.full((9, 4, 224, 224), np.nan, dtype)
        pre.run(images, rois, out, start=1)
        outs.append(out)
    assert not np.isnan(outs[0][1:, :3]).any()
    for out in outs[1:]:
        assert out.tobytes() == outs[0].tobytes()


def test_alignment_is_identical_on_1_and_3_threads(twin_threads):
    """A grid large enough to be split: the z-buffer's atomicMin across host threads."""
    from damage_rig.kernels.align import align_depth_to_color
    from damage_rig.tools.sim import rigs

    cam = rigs.demo_calibration(320, 240).cameras["top"]
    dm = cam.depth
    rng = np.random.default_rng(21)
    yy, xx = np.mgrid[0:dm.size[1], 0:dm.size[0]]
    depth = (700 + 150 * np.sin(xx / 17.0) + 90 * np.cos(yy / 11.0)).astype(np.uint16)
    depth[rng.random(depth.shape) < 0.05] = 0
    assert depth.size >= 1 << 15, "too small to be split over threads"
    got = []
    for n in (1, 3):
        twin_threads("align", n)
        got.append(align_depth_to_color(depth, dm.K, cam.K, cam.size, dm.T_color_depth,
                                        0.001, backend="twin"))
    assert (got[0] > 0).mean() > 0.5
    np.testing.assert_array_equal(got[0], got[1])


def _build_half_converter(tmp_path, extra_flags):
    src = tmp_path / "half.cpp"
    src.write_text(
        '#include <cstdint>\n'
        'extern "C" __attribute__((visibility("default"))) '
        "void to_half(const float* in, uint16_t* out, int n) {\n"
        "    for (int i = 0; i < n; ++i) out[i] = __float2half_rn(in[i]).bits;\n}\n")
    lib = tmp_path / f"half{len(extra_flags)}.so"
    cmd = [loader.find_cxx(), *loader.TWIN_FLAGS, *extra_flags, "-include", str(loader.SHIM),
           str(src), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    fn = ctypes.CDLL(str(lib)).to_half
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return fn


@pytest.mark.parametrize("f16c", [False, True], ids=["software", "f16c"])
def test_shim_half_conversion_equals_numpy(tmp_path, f16c):
    if loader.find_cxx() is None:
        pytest.skip("no C++ compiler")
    if f16c and "-mf16c" not in loader.twin_flags():
        pytest.skip("this CPU has no F16C instruction (or is not x86)")
    convert = _build_half_converter(tmp_path, ["-mf16c"] if f16c else [])
    rng = np.random.default_rng(22)
    vals = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf, -np.inf,
                        6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-9, 1.0 + 2**-11, 1.0 + 3 * 2**-11,
                        2049.0, 2051.0], np.float32)
    small = (rng.standard_normal(5000) * 1e-4).astype(np.float32)  # subnormal halves
    vals = np.concatenate([special, vals[np.isfinite(vals)], small])
    out = np.empty(len(vals), np.uint16)
    convert(vals.ctypes.data, out.ctypes.data, len(vals))
    with np.errstate(over="ignore"):
        want = vals.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(out, want)

