"""CPU twin of kernels/preprocess.cu vs the OpenCV reference path: random sizes and ROIs,
outputs poisoned before every run so an unwritten (or over-written) element is caught."""

import cv2
import numpy as np
import pytest
from damage_rig.rig.foundation.errors import DeviceError
from damage_rig.rig.preprocess import Preprocessor, make_preprocessor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def random_rois(rng, w, h, n, max_side=None):
    rois = []
    for _ in range(n):
        rw = int(rng.integers(1, (max_side or w) + 1))
        rh = int(rng.integers(1, (max_side or h) + 1))
        rw, rh = min(rw, w), min(rh, h)
        x0 = int(rng.integers(0, w - rw + 1))
        y0 = int(rng.integers(0, h - rh + 1))
        rois.append((x0, y0, x0 + rw, y0 + rh))
    return rois


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype)


def reference_rgb(img, roi, size):
    """Independent of the code under test: cv2.resize on the float crop, the formula as written."""
    x0, y0, x1, y1 = roi
    r = cv2.resize(img[y0:y1, x0:x1].astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return (((r.astype(np.float64) / 255.0) - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("seed", range(4))
def test_twin_matches_opencv_rgb_float32(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(8, 97))
    frames = [rng.integers(0, 256, (int(rng.integers(20, 200)), int(rng.integers(20, 260)), 3),
                           dtype=np.uint8) for _ in range(3)]
    n = int(rng.integers(1, 7))
    images = [frames[int(rng.integers(0, 3))] for _ in range(n)]
    rois = [random_rois(rng, im.shape[1], im.shape[0], 1)[0] for im in images]
    batch, start = n + 3, int(rng.integers(0, 4))
    out = poisoned((batch, 4, size, size), np.float32)
    twin = make_preprocessor("twin", size, MEAN, STD)
    twin.run(images, rois, out, start=start)

    written = out[start:start + n, :3]
    assert not np.isnan(written).any(), "an output element was not written"
    untouched = np.ones(batch, bool)
    untouched[start:start + n] = False
    assert np.isnan(out[untouched]).all() and np.isnan(out[:, 3]).all(), "wrote outside its slots"
    for i, (img, roi) in enumerate(zip(images, rois)):
        err = np.abs(written[i] - reference_rgb(img, roi, size)).max()
        assert err <= 1e-5, f"ROI {roi} of {img.shape}: max abs error {err}"

    ref = poisoned(out.shape, np.float32)
    make_preprocessor("opencv", size, MEAN, STD).run(images, rois, ref, start=start)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_twin_matches_opencv_on_8_rois_of_720p_at_224():
    """The production shape: large crops (downscaling, coordinates ~600 px)."""
    rng = np.random.default_rng(10)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(2)]
    images = [frames[i % 2] for i in range(8)]
    rois = random_rois(rng, 1280, 720, 8)
    a = poisoned((8, 4, 224, 224), np.float32)
    b = a.copy()
    make_preprocessor("twin", 224, MEAN, STD).run(images, rois, a)
    make_preprocessor("opencv", 224, MEAN, STD).run(images, rois, b)
    assert not np.isnan(a[:, :3]).any()
    assert np.abs(a[:, :3] - b[:, :3]).max() <= 1e-5
    assert np.isnan(a[:, 3]).all()


def test_upscaling_and_edge_crops():
    """Crops smaller than the output (weights from the clamped border) and one-pixel crops."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    rois = [(0, 0, 1, 1), (49, 39, 50, 40), (0, 0, 50, 40), (10, 5, 13, 30), (0, 39, 50, 40)]
    out = poisoned((5, 3, 64, 64), np.float32)
    make_preprocessor("twin", 64, MEAN, STD).run([img] * 5, rois, out)
    for i, roi in enumerate(rois):
        assert np.abs(out[i] - reference_rgb(img, roi, 64)).max() <= 1e-5
    # a 1x1 crop is a constant image
    np.testing.assert_allclose(out[0, 0], (img[0, 0, 0] / 255 - MEAN[0]) / STD[0], atol=1e-6)


def test_fp16_output_is_the_float32_result_rounded():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rois = random_rois(rng, 160, 120, 5)
    out16 = poisoned((6, 4, 48, 48), np.float16)
    ref = poisoned((6, 4, 48, 48), np.float32)
    make_preprocessor("twin", 48, MEAN, STD).run([img] * 5, rois, out16, start=1)
    make_preprocessor("opencv", 48, MEAN, STD).run([img] * 5, rois, ref, start=1)
    got = out16[1:6, :3].astype(np.float32)
    want = ref[1:6, :3]
    assert not np.isnan(got).any()
    # fp16 rounding adds at most one fp16 step (half a step either side of a power of two,
    # where the step changes) to the float32 agreement (1e-5); the two roundings are equal
    # except where the float32 values straddle a rounding boundary.
    want16 = want.astype(np.float16).astype(np.float32)
    step = np.abs(np.spacing(np.abs(want).astype(np.float16))).astype(np.float32)
    assert (np.abs(got - want) <= step + 1e-5).all()
    assert (got == want16).mean() > 0.99
    assert np.isnan(out16[0]).all() and np.isnan(out16[:, 3]).all()


def test_half_conversion_rounds_to_nearest_even_like_numpy():
    """The twin's software float->half (normals, subnormals, ties, overflow to inf)."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    vals = bits.view(np.float32)
    vals = vals[np.isfinite(vals)]
    # (-0.0 is left out: the kernel computes v*1 + 0, which is +0 by IEEE rules)
    special = np.array([0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, 6.1e-5, 5.96e-8,
                        2.98e-8, 2.99e-8, 1e-9, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 2049.0, 2051.0],
                       np.float32)
    vals = np.concatenate([special, vals, (rng.random(2000) * 2e-4).astype(np.float32)])
    n = len(vals)
    plane = vals.reshape(1, n)
    out = poisoned((n, 1, 1, 1), np.float16)
    pre = make_preprocessor("twin", 1, MEAN, STD)
    pre.run_float([plane] * n, [(i, 0, i + 1, 1) for i in range(n)], out, start=0, channel=0)
    with np.errstate(over="ignore"):
        want = vals.astype(np.float16)
    np.testing.assert_array_equal(out.reshape(-1).view(np.uint16), want.view(np.uint16))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_planes(dtype):
    rng = np.random.default_rng(6)
    planes = [rng.random((90, 130), dtype=np.float32) * 3000 for _ in range(2)]
    rois = random_rois(rng, 130, 90, 4)
    images = [planes[i % 2] for i in range(4)]
    out = poisoned((5, 4, 32, 32), dtype)
    make_preprocessor("twin", 32, MEAN, STD).run_float(images, rois, out, start=1, channel=3,
                                                       scale=0.001, offset=-1.5)
    for i, ((x0, y0, x1, y1), pl) in enumerate(zip(rois, images)):
        want = cv2.resize(pl[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_LINEAR) * 0.001 - 1.5
        tol = 1e-5 if dtype == np.float32 else 2e-3
        assert np.abs(out[1 + i, 3].astype(np.float32) - want).max() <= tol
    assert np.isnan(out[:, :3]).all() and np.isnan(out[0]).all()


def test_both_backends_satisfy_the_protocol():
    for name in ("opencv", "twin"):
        pre = make_preprocessor(name, 16, MEAN, STD)
        assert isinstance(pre, Preprocessor) and pre.name == name


def test_bad_calls_name_the_problem():
    pre = make_preprocessor("twin", 16, MEAN, STD)
    img = np.zeros((10, 10, 3), np.uint8)
    out = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(DeviceError, match="ROI 0"):
        pre.run([img], [(0, 0, 11, 5)], out)
    with pytest.raises(DeviceError, match="ROI 0"):
        pre.run([img], [(5, 5, 5, 8)], out)  # empty
    with pytest.raises(DeviceError, match="do not fit"):
        pre.run([img] * 2, [(0, 0, 5, 5)] * 2, out, start=1)
    with pytest.raises(DeviceError, match="16x16"):
        pre.run([img], [(0, 0, 5, 5)], np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(DeviceError, match="uint8"):
        pre.run([img.astype(np.float32)], [(0, 0, 5, 5)], out)
    with pytest.raises(DeviceError, match="float32 or float16"):
        pre.run([img], [(0, 0, 5, 5)], out.astype(np.float64))
    with pytest.raises(DeviceError, match="unknown preprocess backend"):
        make_preprocessor("vulkan", 16, MEAN, STD)


def test_cuda_backend_without_pycuda_says_what_is_missing():
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        with pytest.raises(DeviceError, match="pycuda"):
            make_preprocessor("cuda", 16, MEAN, STD)
    else:
        pytest.skip("pycuda is installed here; the GPU path is checked by rig selftest")
