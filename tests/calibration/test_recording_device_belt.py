"""realsense_io (recording) round trip, --from-device on a recording, and the belt plane."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
from damage_rig.calibration.belt_plane import (
    compare_with_belt_frame,
    depth_to_points,
    fit_belt_plane,
    height_above_plane,
    transform_plane,
)
from damage_rig.calibration.model import invert_T
from damage_rig.rig.foundation.errors import CalibrationError, DeviceError
from damage_rig.tools.sim.rigs import jetson_3cam_calibration


def test_missing_pyrealsense2_is_a_device_error(monkeypatch, tmp_path):
    from damage_rig.rig.capture import realsense_io as recording

    real_import = builtins.__import__

    def no_rs(name, *a, **k):
        if name == "pyrealsense2":
            raise ImportError("No module named 'pyrealsense2'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_rs)
    cam = jetson_3cam_calibration(64, 48).cameras["top"]
    with pytest.raises(DeviceError, match=r"pyrealsense2 is not available.*pip install"):
        recording.write_recording(tmp_path / "x.db3", cam, [])


def _belt_depth(cam, height_mm=0.0, box=True):
    """Depth image (mm) of the empty belt (plus a box) seen by cam's depth imager."""
    K, (w, h) = cam.depth.K, cam.depth.size
    T_belt_d = cam.T_ref_cam @ cam.depth.T_color_depth
    v, u = np.mgrid[0:h, 0:w]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    R, t = T_belt_d[:3, :3], T_belt_d[:3, 3]
    dirs = rays @ R.T
    s = (height_mm / 1000.0 - t[2]) / dirs[..., 2]
    z = s  # rays have z = 1 in the depth frame: the depth is the ray scale
    if box:
        hit = np.abs(t[0] + s * dirs[..., 0]) < 0.05
        z = np.where(hit, s * 0.85, z)
    return np.clip(np.rint(z * 1000), 0, 65535).astype(np.uint16)


def test_fit_belt_plane_ignores_items_and_agrees_with_belt_frame():
    cam = jetson_3cam_calibration(320, 180).cameras["side_left"]
    depth = _belt_depth(cam)
    pts = depth_to_points(depth, cam.depth.K, 0.001, stride=2)
    n, d = fit_belt_plane(pts)
    assert d > 0  # oriented towards the camera: items have positive height
    T_belt_depth = cam.T_ref_cam @ cam.depth.T_color_depth
    cmp = compare_with_belt_frame(n, d, T_belt_depth)
    assert cmp["tilt_deg"] < 0.3
    assert abs(cmp["offset_below_camera_mm"]) < 2.0
    # the box is above the plane
    h = height_above_plane(pts, n, d)
    assert h.max() > 0.05 and np.median(np.abs(h)) < 0.002
    # moved belt (camera bumped) is detected
    moved = invert_T(T_belt_depth)
    n2, d2 = transform_plane(np.array([0.0, 0, 1]), -0.01, moved)
    assert compare_with_belt_frame(n2, d2, T_belt_depth)["offset_below_camera_mm"] == pytest.approx(10, abs=0.1)


def test_fit_belt_plane_rejects_bad_input():
    with pytest.raises(CalibrationError, match=r"\(N, 3\)"):
        fit_belt_plane(np.zeros((10, 2)))
    rng = np.random.default_rng(0)
    with pytest.raises(CalibrationError, match="belt in view"):
        fit_belt_plane(rng.uniform(-1, 1, (2000, 3)), threshold_m=0.001)


rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (pip install '.[realsense]')")


@pytest.mark.realsense
def test_recording_round_trip_refuses_bag_and_keeps_frames(tmp_path):
    from damage_rig.rig.capture.realsense_io import Recording, write_recording

    cam = jetson_3cam_calibration(160, 90).cameras["top"]
    rng = np.random.default_rng(3)
    frames = [(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8),
               rng.integers(0, 4000, (90, 160)).astype(np.uint16)) for _ in range(6)]
    with pytest.raises(DeviceError, match=r"\.db3"):
        write_recording(tmp_path / "x.bag", cam, frames)
    assert write_recording(tmp_path / "x.db3", cam, frames, fps=15, serial="S1") == 6
    rec = Recording(tmp_path / "x.db3")
    assert rec.serial == "S1" and rec.frame_count == 6 and rec.fps == 15
    np.testing.assert_allclose(rec.T_color_depth, cam.depth.T_color_depth, atol=2e-6)
    got = list(rec.frames())
    assert [f.index for f in got] == list(range(6))
    assert got[2].timestamp_ms == pytest.approx(2 * 1000 / 15, abs=0.01)
    for f in got:
        np.testing.assert_array_equal(f.color, frames[f.index][0])  # RGB order kept
        np.testing.assert_array_equal(f.depth, frames[f.index][1])


@pytest.mark.realsense
def test_from_device_reads_recording_and_compares_with_board(tmp_path, capsys):
    import json

    from damage_rig.calibration.model import load_calibration, save_calibration
    from damage_rig.rig.capture.realsense_io import write_recording
    from damage_rig.rig.cli import main

    calib = jetson_3cam_calibration(320, 180)
    save_calibration(calib, tmp_path / "board.yaml")
    cam = calib.cameras["top"]
    write_recording(tmp_path / "top.db3", cam, [(np.zeros((180, 320, 3), np.uint8), _belt_depth(cam))])
    rc = main(["calibrate", "--from-device", "--recording", f"top={tmp_path / 'top.db3'}",
               "--calib", str(tmp_path / "board.yaml"), "--out", str(tmp_path / "merged.yaml"),
               "--json", str(tmp_path / "f.json")])
    assert rc == 0
    report = json.loads((tmp_path / "f.json").read_text())
    cmp = report["comparison"]["top"]
    assert cmp["ok"] and max(abs(v) for v in cmp["focal_diff_pct"]) < 0.01
    merged = load_calibration(tmp_path / "merged.yaml")
    np.testing.assert_allclose(merged.cameras["top"].depth.T_color_depth, cam.depth.T_color_depth, atol=2e-6)
    # and the belt plane in that recording agrees with the (design) belt frame
    rc = main(["calibrate", "--belt-check", "--recording", f"top={tmp_path / 'top.db3'}",
               "--calib", str(tmp_path / "merged.yaml")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "top: belt plane from depth vs board belt frame" in out


@pytest.mark.realsense
def test_belt_check_warning_exits_1(tmp_path, capsys):
    """Issue 17: a verdict short of OK is exit 1 (2 is argparse's usage error)."""
    from damage_rig.calibration.model import save_calibration
    from damage_rig.rig.capture.realsense_io import write_recording
    from damage_rig.rig.cli import main

    calib = jetson_3cam_calibration(320, 180)
    save_calibration(calib, tmp_path / "board.yaml")
    cam = calib.cameras["top"]
    lifted = _belt_depth(cam, height_mm=40.0)  # the depth camera sees the belt 40 mm higher than the board said
    write_recording(tmp_path / "top.db3", cam, [(np.zeros((180, 320, 3), np.uint8), lifted)])
    rc = main(["calibrate", "--belt-check", "--recording", f"top={tmp_path / 'top.db3'}",
               "--calib", str(tmp_path / "board.yaml"), "--json", "-"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    assert json.loads(captured.out)["top"]["verdict"] == "warn"  # --json -: the figures alone on stdout
    assert "WARN" in captured.err
