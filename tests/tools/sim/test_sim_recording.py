"""`rig sim --recording` writes .db3 files that pyrealsense2 itself plays back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from damage_rig.rig.cli import main

rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 is not installed (pip install '.[realsense]')")

pytestmark = pytest.mark.realsense


def test_recording_plays_back_with_written_intrinsics_units_and_frame_count(tmp_path, demo_calib):
    from damage_rig.rig.capture.realsense_io import Recording

    out = tmp_path / "ds"
    assert main(["sim", "--items", "2", "--seed", "2", "--skus", "4", "--refs-per-sku", "1", "--out", str(out),
                 "--recording", "--recording-items", "1"]) == 0
    truth = json.loads((out / "recordings" / "truth.json").read_text())
    for name, cam in demo_calib.cameras.items():
        rec = Recording(out / "recordings" / f"{name}.db3")
        np.testing.assert_allclose(rec.color_K, cam.K, atol=1e-3)
        np.testing.assert_allclose(rec.depth_K, cam.depth.K, atol=1e-3)
        assert tuple(rec.color_size) == tuple(cam.size)
        assert rec.depth_units_mm == pytest.approx(cam.depth.depth_units_mm, rel=1e-4)
        np.testing.assert_allclose(rec.T_color_depth, cam.depth.T_color_depth, atol=2e-6)
        frames = list(rec.frames())
        assert [f.index for f in frames] == list(range(truth["frames"]))
        # the item passes: depth somewhere in the middle of the run rises above the belt
        belt = np.median(frames[0].depth[frames[0].depth > 0])
        mid = frames[len(frames) // 2].depth
        assert (mid[mid > 0] < belt - 20).sum() > 200
