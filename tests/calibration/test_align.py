"""calibration.align: the rs.align reference — its spec on small cases, and identity
with pyrealsense2's own rs.align on recordings written through software_device."""

from __future__ import annotations

import numpy as np
import pytest
from damage_rig.calibration.align import align_depth_to_color
from damage_rig.calibration.model import CameraModel, DepthModel
from damage_rig.rig.foundation.errors import CalibrationError
from damage_rig.rig.foundation.geometry import uses_pixel_rectangles
from damage_rig.tools.sim.rigs import intrinsics


def _K(w, h, fov, cx=0.0, cy=0.0):
    return intrinsics(w, h, fov, cx, cy)


def test_identity_geometry_copies_depth():
    K = _K(64, 48, 60)
    d = np.arange(1, 64 * 48 + 1, dtype=np.uint16).reshape(48, 64)
    out = align_depth_to_color(d, K, K, (64, 48), np.eye(4), 0.001)
    # same camera: each pixel lands on itself or, where float32 rounding puts the corner
    # a hair below an integer, on its neighbour (holes included, as in rs.align)
    assert out.dtype == np.uint16 and out.shape == (48, 64)
    ys, xs = np.nonzero(out)
    assert len(ys) > 0.5 * out.size
    for y, x in zip(ys, xs):
        assert out[y, x] in d[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]


def test_zero_depth_writes_nothing_and_nearest_wins():
    K = _K(64, 48, 60)
    d = np.zeros((48, 64), np.uint16)
    out = align_depth_to_color(d, K, K, (64, 48), np.eye(4), 0.001)
    assert not out.any()
    # two depth pixels landing on the same colour pixel: the smaller value wins
    T = np.eye(4)
    T[0, 3] = 0.01  # 10 mm baseline: near points shift more than far ones
    d[20, 30] = 500
    d[20, 31] = 2000
    out = align_depth_to_color(d, K, K, (64, 48), T, 0.001)
    vals = set(np.unique(out)) - {0}
    assert vals <= {500, 2000}
    shift = round(K[0, 0] * 0.01 / 0.5)  # ~1 px for the near pixel
    assert out[20, 30 + shift] == 500


def test_rectangles_clip_at_the_edge_not_dropped():
    Kd, Kc = _K(32, 24, 80), _K(128, 96, 60)  # colour has more pixels per degree
    assert uses_pixel_rectangles(Kd, (32, 24), Kc, (128, 96))
    d = np.full((24, 32), 1000, np.uint16)
    out = align_depth_to_color(d, Kd, Kc, (128, 96), np.eye(4), 0.001)
    assert (out[0] > 0).all() and (out[-1] > 0).all() and (out[:, 0] > 0).all()


def test_single_pixel_branch_when_depth_is_denser():
    Kd, Kc = _K(128, 96, 50), _K(32, 24, 70)
    assert not uses_pixel_rectangles(Kd, (128, 96), Kc, (32, 24))


def test_bad_inputs_name_shape_and_dtype():
    K = _K(8, 6, 60)
    with pytest.raises(CalibrationError, match=r"uint16.*float64"):
        align_depth_to_color(np.zeros((6, 8)), K, K, (8, 6), np.eye(4), 0.001)
    with pytest.raises(CalibrationError, match=r"T_color_depth must be \(4, 4\)"):
        align_depth_to_color(np.zeros((6, 8), np.uint16), K, K, (8, 6), np.eye(3), 0.001)


# --------------------------------------------------------------------------------------------
rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (pip install '.[realsense]')")


def _scene(w, h, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    d = (700 + 0.3 * xx + 0.2 * yy + rng.normal(0, 3, (h, w))).astype(np.uint16)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - w // 4), rng.integers(0, h - h // 4)
        d[y0:y0 + h // 5, x0:x0 + w // 5] -= np.uint16(rng.integers(50, 300))
    d[rng.random((h, w)) < 0.05] = 0
    return d


@pytest.mark.realsense
@pytest.mark.parametrize("dsize,dfov,csize,cfov,units", [
    ((320, 240), 74.0, (424, 240), 69.0, 1.0),   # rectangles (colour denser)
    ((424, 240), 60.0, (320, 180), 69.0, 0.1),   # single pixel (depth denser), 0.1 mm units
    ((640, 480), 74.0, (640, 360), 69.0, 1.0),   # librealsense's special resolution pair
])
def test_identical_to_librealsense_rs_align(tmp_path, dsize, dfov, csize, cfov, units):
    from damage_rig.rig.capture.realsense_io import Recording, write_recording
    from damage_rig.rig.commands.align import agreement

    a = np.deg2rad(2.0)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [-0.015, 0.0003, 0.0005]
    cam = CameraModel("c", _K(*csize, cfov, 2.1, -1.4), np.zeros(5), csize, np.eye(4),
                      DepthModel(_K(*dsize, dfov, 1.3, -0.8), dsize, T, units))
    frames = [(np.zeros((csize[1], csize[0], 3), np.uint8), _scene(*dsize, s)) for s in range(2)]
    path = tmp_path / "r.db3"
    assert write_recording(path, cam, frames) == 2
    rec = Recording(path)
    raw = {f.index: f.depth for f in rec.frames()}
    for f in rec.frames(librealsense_aligned=True):
        ours = align_depth_to_color(raw[f.index], rec.depth_K, rec.color_K, rec.color_size,
                                    rec.T_color_depth, rec.depth_units_mm / 1000.0)
        stats = agreement(ours, f.depth)
        assert stats["valid_agreement"] >= 0.99 and stats["mean_abs_diff"] <= 1.0, stats
        np.testing.assert_array_equal(ours, f.depth)  # measured: bit-identical


@pytest.mark.realsense
def test_rig_align_cli_writes_one_png_per_frame(tmp_path):
    import cv2
    from damage_rig.rig.capture.realsense_io import write_recording
    from damage_rig.rig.cli import main

    dsize = csize = (320, 240)
    T = np.eye(4)
    T[0, 3] = -0.015
    cam = CameraModel("c", _K(*csize, 69.0), np.zeros(5), csize, np.eye(4),
                      DepthModel(_K(*dsize, 74.0), dsize, T, 1.0))
    write_recording(tmp_path / "r.db3", cam,
                    [(np.zeros((240, 320, 3), np.uint8), _scene(320, 240, s)) for s in range(3)])
    out = tmp_path / "aligned"
    assert main(["align", "--recording", str(tmp_path / "r.db3"), "--out", str(out),
                 "--compare-librealsense"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    img = cv2.imread(str(out / "1.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (240, 320)
