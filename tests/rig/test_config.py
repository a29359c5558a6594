"""Config validation: every problem reported with file, line, key path, value and expectation."""

from __future__ import annotations

import shutil

import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA, check_config, load_config
from damage_rig.rig.foundation.errors import ConfigError


def _write(tmp_path, text: str):
    shutil.copy(PACKAGE_DATA / "demo_calib.yaml", tmp_path / "demo_calib.yaml")
    p = tmp_path / "rig.yaml"
    p.write_text(text)
    return p


def _demo_text() -> str:
    return DEMO_CONFIG.read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_demo_config_is_valid():
    cfg = check_config(DEMO_CONFIG)
    assert [c.name for c in cfg.cameras] == ["top", "side"]
    assert cfg.calibration_path == PACKAGE_DATA / "demo_calib.yaml"


def test_jetson_example_config_is_valid_apart_from_hardware():
    cfg = load_config(PACKAGE_DATA / "jetson_3cam.yaml")
    assert cfg.inference.backend == "tensorrt" and len(cfg.cameras) == 3


def test_unknown_key_is_reported_with_its_line(tmp_path):
    text = _demo_text().replace("    fps: 30\n", "    fsp: 30\n", 1)
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    line = _line_of(text, "fsp: 30")
    assert exc.value.problems == [f"{p}:{line}: cameras.0.fsp: unknown key (value 30); check the spelling"]


def test_out_of_range_and_wrong_type_each_get_a_line(tmp_path):
    text = _demo_text().replace("max_batch: 8", "max_batch: 0").replace("speed_mps: 0.5", "speed_mps: fast")
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    probs = exc.value.problems
    assert len(probs) == 2
    batch = next(x for x in probs if "inference.max_batch" in x)
    assert batch.startswith(f"{p}:{_line_of(text, 'max_batch: 0')}:") and "bad value 0" in batch
    assert "greater than or equal to 1" in batch
    speed = next(x for x in probs if "belt.speed_mps" in x)
    assert speed.startswith(f"{p}:{_line_of(text, 'speed_mps: fast')}:") and "'fast'" in speed


def test_camera_missing_from_calibration_is_a_cross_file_error(tmp_path):
    text = _demo_text().replace("name: side", "name: sidecam")
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        check_config(p)
    (prob,) = exc.value.problems
    assert prob.startswith(f"{p}:{_line_of(text, 'name: sidecam')}: cameras.1.name:")
    assert "'sidecam' is not in the calibration file" in prob


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = _write(tmp_path, "cameras: [\n  name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_config_check_cli_exit_codes(tmp_path, capsys):
    assert main(["config", "check", str(DEMO_CONFIG)]) == 0
    p = _write(tmp_path, _demo_text().replace("fail_safe: divert", "fail_safe: maybe"))
    assert main(["config", "check", str(p)]) == 1
    err = capsys.readouterr().err
    assert "decision.fail_safe" in err and "'maybe'" in err
