"""systemd/install.sh run for real with the system's commands stubbed (user, venv, pip, systemctl):
it copies the calibration the config names, installs the jetson extra on a Jetson, writes the network
drop-in for the MQTT broker, and stops with `rig config check`'s message before enabling anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from damage_rig.rig.config import DEMO_CONFIG

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "systemd" / "install.sh"

STUBS = {
    "id": 'case "$1" in -u) echo 0;; *) exit 0;; esac',
    "getent": "exit 0",
    "groupadd": 'echo "groupadd $*" >> "$CALLS"',
    "useradd": 'echo "useradd $*" >> "$CALLS"',
    "systemctl": 'echo "systemctl $*" >> "$CALLS"',
    "systemd-analyze": 'echo "systemd-analyze $*" >> "$CALLS"',
    # python3 -m venv --system-site-packages DIR: a venv whose rig/python are this test's interpreter
    "python3": 'dir="$4"; mkdir -p "$dir/bin"\n'
               'printf \'#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n\' > "$dir/bin/pip"\n'
               f'printf \'#!/bin/sh\\nexec {sys.executable} "$@"\\n\' > "$dir/bin/python"\n'
               f'printf \'#!/bin/sh\\nexec {sys.executable} -m damage_rig.rig.cli "$@"\\n\' > "$dir/bin/rig"\n'
               'chmod +x "$dir/bin/pip" "$dir/bin/python" "$dir/bin/rig"',
}


def run_install(tmp_path: Path, config: Path, **env_extra) -> tuple[subprocess.CompletedProcess, str]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (stubs / name).write_text("#!/bin/sh\n" + body + "\n")
        (stubs / name).chmod(0o755)
    calls = tmp_path / "calls.log"
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}", CALLS=str(calls), PREFIX=str(tmp_path / "opt"),
               CONF_DIR=str(tmp_path / "etc"), UNIT_DIR=str(tmp_path / "units"),
               TEGRA_RELEASE=str(tmp_path / "no-tegra"))
    env.update(env_extra)
    (tmp_path / "units").mkdir(exist_ok=True)
    res = subprocess.run(["sh", str(SCRIPT), str(config)], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    return res, calls.read_text() if calls.is_file() else ""


def site_config(tmp_path: Path, **changes) -> Path:
    src = tmp_path / "site"
    src.mkdir()
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    shutil.copy(DEMO_CONFIG.parent / cfg["calibration"], src / "calib-line3.yaml")
    cfg["calibration"] = "calib-line3.yaml"
    cfg["storage"]["state_dir"] = "/var/lib/damage-rig"
    cfg.update(changes)
    path = src / "rig.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_install_copies_the_calibration_and_enables_both_units(tmp_path):
    config = site_config(tmp_path, mqtt={"url": "mqtt://127.0.0.1:1883"})
    res, calls = run_install(tmp_path, config)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "etc" / "calib-line3.yaml").read_bytes() == (config.parent / "calib-line3.yaml").read_bytes()
    assert "systemctl enable --now damage-rig.service damage-rig-review.service" in calls
    assert "[realsense]" in calls.split("pip install --upgrade ")[1].splitlines()[0]
    dropin = (tmp_path / "units" / "damage-rig.service.d" / "10-site-network.conf").read_text()
    assert "IPAddressAllow=127.0.0.1" in dropin and "MQTT broker 127.0.0.1" in dropin
    assert (tmp_path / "units" / "damage-rig-review.service").is_file()


def test_install_stops_before_enabling_when_the_config_check_fails(tmp_path):
    config = site_config(tmp_path, cameras=[{"name": "nosuchcam", "source": "sim"}])
    res, calls = run_install(tmp_path, config)
    assert res.returncode == 1
    assert "nosuchcam" in res.stdout + res.stderr  # rig config check's own line
    assert "nothing was enabled or started" in res.stderr
    assert "enable" not in calls and "daemon-reload" not in calls


def test_install_adds_the_jetson_extra_on_a_jetson(tmp_path):
    config = site_config(tmp_path)
    (tmp_path / "tegra").write_text("# R36 (release), REVISION: 4.0\n")
    res, calls = run_install(tmp_path, config, TEGRA_RELEASE=str(tmp_path / "tegra"))
    assert res.returncode == 0, res.stderr
    assert "[realsense,jetson]" in calls
