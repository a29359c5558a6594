"""The demo config on the test model (tests/conftest.py model_dir, make_config), for end-to-end runtime tests."""

from __future__ import annotations

import yaml
from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA, load_config


def demo_config(tmp_path, model_dir, **overrides):
    """The demo config with its paths made absolute and some fields overridden (YAML snippets)."""
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
