"""Board calibration against the synthetic truth (the issue's targets, scaled to half
resolution: errors in pixels double, so do the tolerances)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from damage_rig.calibration.model import load_calibration
from damage_rig.calibration.pipeline import compare_with_truth, run_calibration
from damage_rig.rig.cli import main


def test_intrinsics_extrinsics_and_belt_frame_match_truth(small_captures):
    captures, truth = small_captures
    run = run_calibration(captures, captures / "board.yaml", belt_frame="belt", progress=False)
    cmp = compare_with_truth(run.calibration, truth)
    w = cmp["worst"]
    assert w["focal_pct"] < 0.6
    assert w["principal_point_px"] < 2.0
    assert w["relative_translation_mm"] < 4.0
    assert w["relative_rotation_deg"] < 0.2
    for name, cam in run.figures["cameras"].items():
        assert cam["rms_px"] < 0.4, name
        # belt frame from the board lying on the belt: absolute poses in the belt frame
        assert cmp["cameras"][name]["belt_pose_translation_mm"] < 5.0
        assert cmp["cameras"][name]["belt_pose_rotation_deg"] < 0.3
        # the lens distortion moves pixels like the true one does, edges included
        est, tru = run.calibration.cameras[name], truth.cameras[name]
        w, h = tru.size
        rays = np.array([[(u - tru.K[0, 2]) / tru.K[0, 0], (v - tru.K[1, 2]) / tru.K[1, 1], 1.0]
                         for u in np.linspace(0.05 * w, 0.95 * w, 7) for v in np.linspace(0.05 * h, 0.95 * h, 5)])
        a = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), tru.K, est.dist)[0].reshape(-1, 2)
        b = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), tru.K, tru.dist)[0].reshape(-1, 2)
        assert np.abs(a - b).max() < 1.0, name
    assert run.calibration.belt["source"] == "belt"


def test_joint_solution_refines_every_camera_together(small_captures):
    captures, _ = small_captures
    run = run_calibration(captures, captures / "board.yaml", progress=False)
    ext = run.extrinsics
    # one board pose per moment shared by all cameras (not a chain of pairwise estimates)
    assert set(ext.T_ref_board) >= {"belt", "shared_000"}
    assert ext.iterations >= 1
    for name, rms in ext.joint_rms.items():
        assert rms < 0.4, name
    # reference is the first camera by name when no belt frame is given
    assert run.figures["reference"] == "side_left"
    np.testing.assert_allclose(run.calibration.cameras["side_left"].T_ref_cam, np.eye(4), atol=1e-12)


def test_residuals_are_the_joint_solution_s(small_captures):
    """The residual plot draws what the joint RMS summarises: every corner, model minus detection."""
    from damage_rig.calibration.report import residual_plot, residuals

    captures, _ = small_captures
    run = run_calibration(captures, captures / "board.yaml", belt_frame="belt", progress=False)
    for name, c in run.figures["cameras"].items():
        res, where = residuals(run, name)
        assert len(res) == sum(len(v.corners) for v in run.intrinsics[name].views) == len(where)
        assert np.sqrt((res ** 2).sum(axis=1).mean()) == pytest.approx(c["joint_rms_px"], rel=0.05)
        assert residual_plot(run, name).shape == (400, 1280, 3)


def test_cli_writes_yaml_json_and_report(small_captures, tmp_path):
    captures, _ = small_captures
    out, rep, js = tmp_path / "calib.yaml", tmp_path / "report", tmp_path / "r.json"
    rc = main(["calibrate", "--captures", str(captures), "--board", str(captures / "board.yaml"),
               "--out", str(out), "--report", str(rep), "--json", str(js), "--belt-frame", "belt",
               "--truth", str(captures / "truth.yaml"), "--no-progress"])
    assert rc == 0
    calib = load_calibration(out)
    assert sorted(calib.cameras) == ["side_left", "side_right", "top"]
    assert calib.belt["reference"] == "belt"
    figures = json.loads(js.read_text())
    for name in calib.cameras:
        c = figures["cameras"][name]
        assert c["verdict"] in ("ok", "warn")
        assert set(c) >= {"rms_px", "view_errors_px", "coverage", "reasons", "K", "T_ref_cam"}
        assert (rep / f"{name}.png").is_file()
        plot = cv2.imread(str(rep / f"{name}_residuals.png"))  # issue 17: a residual plot per camera
        assert plot is not None and plot.shape[1] == 1280 and plot.std() > 5
        assert f"{name}_residuals.png" in (rep / "index.html").read_text()
    assert figures["consistency_mm"] and figures["consistency_frame"].startswith("belt plane")
    assert figures["truth"]["worst"]["relative_translation_mm"] < 4.0
    assert "Calibration report" in (rep / "index.html").read_text()
