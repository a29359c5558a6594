"""Every problem a technician can meet names the camera and says what to do."""

from __future__ import annotations

import shutil

import pytest
import yaml
from damage_rig.calibration.pipeline import run_calibration
from damage_rig.calibration.quality import camera_verdict
from damage_rig.rig.cli import main
from damage_rig.rig.foundation.errors import CalibrationError


def _run(captures, **kw):
    return run_calibration(captures, captures / "board.yaml", progress=False, **kw)


def test_missing_camera_folder(captures_copy):
    with pytest.raises(CalibrationError, match=r"camera 'front'.*folder.*missing.*capture images"):
        _run(captures_copy, cameras=["top", "front"])


def test_missing_camera_folder_via_cli(captures_copy, tmp_path, capsys):
    shutil.rmtree(captures_copy / "side_right")
    rc = main(["calibrate", "--captures", str(captures_copy), "--board", str(captures_copy / "board.yaml"),
               "--out", str(tmp_path / "c.yaml"), "--cameras", "top,side_left,side_right", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "side_right" in err and "missing" in err


def test_board_that_does_not_match_the_yaml(captures_copy):
    board = yaml.safe_load((captures_copy / "board.yaml").read_text())
    board["dictionary"] = "DICT_6X6_250"
    (captures_copy / "board.yaml").write_text(yaml.safe_dump(board))
    with pytest.raises(CalibrationError) as exc:
        _run(captures_copy)
    msg = str(exc.value)
    assert "camera 'side_left'" in msg and "does not match the board YAML" in msg
    assert "DICT_4X4_50" in msg  # the diagnosis names the dictionary the images really show


def test_board_smaller_than_printed(captures_copy):
    board = yaml.safe_load((captures_copy / "board.yaml").read_text())
    board["squares_x"], board["squares_y"] = 5, 4
    (captures_copy / "board.yaml").write_text(yaml.safe_dump(board))
    with pytest.raises(CalibrationError, match=r"camera '.*'.*(squares_x/squares_y|does not match)"):
        _run(captures_copy)


def test_too_few_views(captures_copy):
    keep = {"belt.png", "shared_000.png", "shared_001.png"}
    for p in (captures_copy / "top").iterdir():
        if p.name not in keep:
            p.unlink()
    with pytest.raises(CalibrationError, match=r"camera 'top': only \d usable view.*capture more views"):
        _run(captures_copy)


def test_camera_never_seen_with_another(captures_copy):
    for p in (captures_copy / "side_right").iterdir():
        p.rename(p.with_name("solo_" + p.name))
    with pytest.raises(CalibrationError,
                       match=r"camera 'side_right' never sees the board at the same moment.*same file name"):
        _run(captures_copy)


def test_unreadable_image(captures_copy):
    (captures_copy / "side_left" / "shared_003.png").write_bytes(b"not a png at all")
    with pytest.raises(CalibrationError, match=r"camera 'side_left': cannot read image .*shared_003.png.*re-export"):
        _run(captures_copy)


def test_belt_frame_moment_must_exist(small_captures):
    captures, _ = small_captures
    with pytest.raises(CalibrationError, match=r"--belt-frame 'nope'.*flat on the belt"):
        _run(captures, belt_frame="nope")


def test_verdict_names_camera_reason_and_fix_for_half_coverage(small_captures):
    captures, _ = small_captures
    run = _run(captures)
    name = "top"
    intr = run.intrinsics[name]
    w = intr.size[0]
    intr.views = [v for v in intr.views if v.corners[:, 0].max() < 0.5 * w]
    assert intr.views, "the fixture should have views in the left half"
    v = camera_verdict(name, run.detections[name], intr, run.extrinsics, {}, {"side_left": ["belt"]})
    assert v["verdict"] == "fail"
    msgs = [r["message"] for r in v["reasons"]]
    assert any(m.startswith("top: corners cover only the left half of the image — add views with the "
                            "board in the right half") for m in msgs), msgs
