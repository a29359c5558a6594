"""The CPU reference preprocessing: normalisation and relative height against known geometry."""

import numpy as np
import pytest
from damage_rig.rig.foundation.errors import ModelError
from damage_rig.rig.preprocess.reference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalize_rgb,
    relative_height,
)


def test_normalize_rgb_is_imagenet_normalisation_in_chw():
    rgb = np.zeros((50, 70, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    x = normalize_rgb(rgb, 32)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    for c, v in enumerate((255, 128, 0)):
        assert np.allclose(x[c], (v / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], atol=1e-6)


def test_normalize_rgb_rejects_bad_arrays_naming_the_view():
    with pytest.raises(ModelError, match="item 'x' view 'top'.*uint8"):
        normalize_rgb(np.zeros((10, 10, 3), np.float32), 32, where="item 'x' view 'top'")


def _tilted_scene(size=200, box_mm=80.0):
    """A pinhole camera looking at a tilted belt plane, with a box standing on it."""
    f, cx, cy = 300.0, size / 2, size / 2
    v, u = np.mgrid[:size, :size].astype(np.float64)
    x, y = (u - cx) / f, (v - cy) / f
    n, d0 = np.array([0.0, -0.5, 1.0]), 700.0       # plane n . X = d0, tilted toward the camera
    z = d0 / (n[0] * x + n[1] * y + n[2])
    box = (abs(u - cx) < 30) & (abs(v - cy) < 30)
    depth = z.copy()
    depth[box] -= box_mm
    return depth.astype(np.float32), box


def test_relative_height_recovers_a_box_on_a_tilted_belt():
    depth, box = _tilted_scene()
    h = relative_height(depth, 200, 100.0)[0]
    assert np.allclose(h[box], 0.8, atol=0.01)       # 80 mm at 100 mm per unit
    assert np.abs(h[~box]).max() < 0.01              # the belt reads zero everywhere


def test_relative_height_ignores_holes_and_handles_no_depth():
    depth, box = _tilted_scene()
    depth[::7, ::5] = 0
    h = relative_height(depth, 200, 100.0)[0]
    assert np.all(h[::7, ::5] == 0) and np.median(h[box]) == pytest.approx(0.8, abs=0.01)
    assert not relative_height(None, 64, 100.0).any()
    assert not relative_height(np.zeros((40, 40), np.float32), 64, 100.0).any()
