"""Synthetic ChArUco captures with known truth, rendered once per session at a small scale
(3 cameras at 640x360, a coarse board) so the suite stays quick on two cores."""

from __future__ import annotations

import shutil

import pytest
from damage_rig.calibration.board import BoardSpec

SMALL_BOARD = BoardSpec(squares_x=7, squares_y=5, square_mm=60.0, marker_mm=45.0,
                        dictionary="DICT_4X4_50")


@pytest.fixture(scope="session")
def small_captures(tmp_path_factory):
    """(captures dir, true Calibration); do not modify: copy with `captures_copy`."""
    from damage_rig.tools.sim.charuco import synthesize_captures
    from damage_rig.tools.sim.rigs import jetson_3cam_calibration

    out = tmp_path_factory.mktemp("charuco") / "captures"
    truth = synthesize_captures(out, jetson_3cam_calibration(640, 360), SMALL_BOARD, n_shared=6,
                                n_per_camera=9, seed=1, progress=False)
    return out, truth


@pytest.fixture
def captures_copy(small_captures, tmp_path):
    src, _ = small_captures
    dst = tmp_path / "captures"
    shutil.copytree(src, dst)
    return dst
