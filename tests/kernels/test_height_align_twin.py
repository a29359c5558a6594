"""CPU twin of kernels/height.cu and kernels/align.cu vs their references."""

import numpy as np
import pytest
from damage_rig.kernels.height import height_map, height_map_reference
from damage_rig.tools.sim import rigs

align_ref = pytest.importorskip("damage_rig.calibration.align")


def test_height_map_matches_numpy_reference_and_known_plane():
    rng = np.random.default_rng(1)
    h, w = 60, 80
    K = np.array([[70.0, 0, 39.2], [0, 70.0, 30.7], [0, 0, 1]])
    n = np.array([0.05, -0.1, -1.0])
    n /= np.linalg.norm(n)
    belt_d = 1.1  # plane n.X + d = 0 is the belt, 1.1 m along -n from the camera
    # depth of the belt itself along each pixel ray, then a 40 mm box in the middle
    rays = np.stack([*np.meshgrid((np.arange(w) - K[0, 2]) / K[0, 0],
                                (np.arange(h) - K[1, 2]) / K[1, 1]), np.ones((h, w))], -1)
    z_belt = -belt_d / (rays @ n)  # metres
    z = z_belt.copy()
    box = (slice(20, 40), slice(30, 50))
    z[box] = -(belt_d - 0.040) / (rays[box] @ n)
    depth = np.round(z * 10000).astype(np.uint16)  # 0.1 mm units
    depth[rng.random(depth.shape) < 0.05] = 0

    got = height_map(depth, 1e-4, K, n, belt_d)
    ref = height_map_reference(depth, 1e-4, K, n, belt_d)
    assert (np.isnan(got) == (depth == 0)).all()
    ok = depth != 0
    assert np.abs(got[ok] - ref[ok]).max() <= 1e-3  # float32 vs float64, mm
    # against the truth: depth quantised to 0.1 mm -> height within ~0.1 mm
    inside = np.zeros_like(ok)
    inside[box] = True
    assert np.abs(got[ok & inside] - 40.0).max() < 0.15
    assert np.abs(got[ok & ~inside]).max() < 0.15


def _scene_depth(w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (700 + 150 * np.sin(xx / 17.0) + 90 * np.cos(yy / 11.0)).astype(np.uint16)
    d[rng.random(d.shape) < 0.05] = 0
    spikes = rng.random(d.shape) < 0.05
    d[spikes] = (d[spikes] + rng.integers(1, 400, spikes.sum())).astype(np.uint16)
    return d


@pytest.mark.parametrize("case", ["rectangles", "points", "tilted"])
def test_alignment_identical_to_calibration_reference(case):
    from damage_rig.kernels.align import align_depth_to_color

    cam = rigs.demo_calibration(160, 120).cameras["top"]
    dm = cam.depth
    dK, cK, csize, T = dm.K, cam.K, cam.size, dm.T_color_depth.copy()
    if case == "points":  # colour coarser than depth -> one colour pixel per depth pixel
        cK = cK.copy()
        cK[:2] /= 2
        csize = (80, 60)
    if case == "tilted":
        a = np.deg2rad(4.0)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        T[:3, :3] = R @ T[:3, :3]
        T[:3, 3] += [0.03, -0.01, 0.02]
    rect = align_ref.uses_pixel_rectangles(dK, dm.size, cK, csize)
    assert rect == (case != "points")
    depth = _scene_depth(*dm.size, seed=len(case))
    want = align_ref.align_depth_to_color(depth, dK, cK, csize, T, 0.001)
    got = align_depth_to_color(depth, dK, cK, csize, T, 0.001)
    assert got.dtype == np.uint16 and got.shape == want.shape
    assert (want > 0).mean() > 0.5  # the scene covers the image
    np.testing.assert_array_equal(got, want)


def test_alignment_keeps_the_nearest_depth_where_pixels_collide():
    """Two depth pixels landing on one colour pixel: the smaller raw value must win
    (the twin's explicit atomicMin), whichever thread runs last."""
    from damage_rig.kernels.align import align_depth_to_color

    cam = rigs.demo_calibration(160, 120).cameras["top"]
    dm = cam.depth
    depth = np.zeros((120, 160), np.uint16)
    depth[60, 80] = 900
    depth[60, 81] = 400  # nearer neighbour: its rectangle overlaps the first one's
    want = align_ref.align_depth_to_color(depth, dm.K, cam.K, cam.size, dm.T_color_depth, 0.001)
    got = align_depth_to_color(depth, dm.K, cam.K, cam.size, dm.T_color_depth, 0.001)
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(got)) == {0, 400, 900}
