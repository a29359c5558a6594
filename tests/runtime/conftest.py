"""A trained model for end-to-end runtime tests: the shipped one (or $RIG_TEST_MODEL_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from damage_rig.models import SHIPPED_DIR


@pytest.fixture(scope="session")
def model_dir() -> Path:
    d = Path(os.environ.get("RIG_TEST_MODEL_DIR", SHIPPED_DIR))
    if not (d / "model_card.yaml").is_file():
        pytest.skip(f"no trained model at {d} (the shipped model is produced by the command in docs/models.md)")
    return d


@pytest.fixture
def make_config(tmp_path, model_dir):
    """make_config(**overrides): the demo config on the test model, state under tmp_path."""
    return lambda **overrides: demo_config(tmp_path, model_dir, **overrides)


def demo_config(tmp_path, model_dir, **overrides):
    """The demo config with its paths made absolute and some fields overridden (YAML snippets)."""
    import yaml

    from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA, load_config

    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["calibration"] = str(PACKAGE_DATA / "demo_calib.yaml")
    data["model"]["dir"] = str(model_dir)
    data["storage"]["state_dir"] = str(tmp_path / "state")
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    p = tmp_path / "rig.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(p)
