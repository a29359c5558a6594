"""Depth aligned only inside an item's ROI window: bit-identical to the full frame's result there."""

import numpy as np
import pytest
from damage_rig.calibration.align import align_depth_to_color as reference
from damage_rig.kernels.align import align_depth_to_color as twin
from damage_rig.rig.foundation.errors import CalibrationError
from damage_rig.tools.sim import rigs


def _scene(w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (650 + 140 * np.sin(xx / 13.0) + 80 * np.cos(yy / 9.0)).astype(np.uint16)
    d[rng.random(d.shape) < 0.08] = 0
    near = rng.random(d.shape) < 0.05  # spikes toward the camera: collisions the minimum must settle
    d[near] = (d[near] - rng.integers(1, 300, near.sum())).astype(np.uint16)
    return d


# windows in the middle, touching each edge and corner, one pixel wide, and the whole image
WINDOWS = [(40, 30, 100, 90), (0, 0, 37, 41), (123, 77, 160, 120), (0, 50, 160, 51), (79, 0, 80, 120),
           (0, 0, 160, 120)]


@pytest.mark.parametrize("align", [reference, twin], ids=["reference", "twin"])
@pytest.mark.parametrize("tilt", [False, True], ids=["demo", "tilted"])
def test_roi_window_is_the_full_frame_bit_for_bit(align, tilt):
    cam = rigs.demo_calibration(160, 120).cameras["top"]
    dm = cam.depth
    T = dm.T_color_depth.copy()
    if tilt:  # depth pixels land off their own row and column: rectangles cross window edges
        a = np.deg2rad(5.0)
        T[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ T[:3, :3]
        T[:3, 3] += [0.02, 0.015, 0.01]
    depth = _scene(*dm.size, seed=3 + tilt)
    full = align(depth, dm.K, cam.K, cam.size, T, 0.001)
    assert (full > 0).mean() > 0.5
    for x0, y0, x1, y1 in WINDOWS:
        got = align(depth, dm.K, cam.K, cam.size, T, 0.001, window=(x0, y0, x1, y1))
        assert got.shape == (y1 - y0, x1 - x0) and got.dtype == np.uint16
        np.testing.assert_array_equal(got, full[y0:y1, x0:x1], err_msg=f"window {(x0, y0, x1, y1)}")
    # the twin and the reference agree on a window as they do on the frame
    w = WINDOWS[0]
    np.testing.assert_array_equal(twin(depth, dm.K, cam.K, cam.size, T, 0.001, window=w),
                                  reference(depth, dm.K, cam.K, cam.size, T, 0.001, window=w))


@pytest.mark.parametrize("align", [reference, twin], ids=["reference", "twin"])
@pytest.mark.parametrize("window", [(10, 10, 10, 20), (-1, 0, 20, 20), (0, 0, 161, 120), (5, 5, 4, 9), "roi"])
def test_a_window_outside_the_image_is_a_clear_error(align, window):
    cam = rigs.demo_calibration(160, 120).cameras["top"]
    dm = cam.depth
    with pytest.raises(CalibrationError, match="window"):
        align(_scene(*dm.size, 1), dm.K, cam.K, cam.size, dm.T_color_depth, 0.001, window=window)
