"""The shipped unit passes `systemd-analyze verify` with no output at all.

verify exits 0 even on unknown keys, so any output fails the test. It also
checks that ExecStart's binary exists, so the unit is verified inside a
throw-away root holding the system's own units and a stub /opt/damage-rig/venv/bin/rig.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "damage-rig.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
    reason="systemd-analyze (package systemd) is not installed here")


def fake_root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/damage-rig/venv/bin/rig"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/damage-rig.service").write_text(unit_text)
    return root


def verify(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "damage-rig.service"],
                          capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
def test_unit_verifies_without_any_output(tmp_path):
    res = verify(fake_root(tmp_path, UNIT.read_text()))
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


@needs_analyze
def test_verify_output_catches_a_typo(tmp_path):
    """The check has teeth: an unknown key exits 0 but prints a line."""
    res = verify(fake_root(tmp_path, UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege=")))
    assert "NoNewPrivilege" in res.stdout + res.stderr


def test_unit_has_what_issue_8_asks_for():
    text = UNIT.read_text()
    keys = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            keys.setdefault(m.group(1), []).append(m.group(2))
    assert keys["Type"] == ["notify"] and keys["Restart"] == ["on-failure"]
    assert "WatchdogSec" in keys and "StartLimitBurst" in keys and "StartLimitIntervalSec" in keys
    assert keys["User"] == ["damage-rig"] and set(keys["SupplementaryGroups"][0].split()) == {
        "dialout", "video", "render"}
    assert keys["DevicePolicy"] == ["closed"] and keys["ProtectSystem"] == ["strict"]
    assert keys["NoNewPrivileges"] == ["yes"] and keys["PrivateTmp"] == ["yes"]
    allowed = " ".join(keys["DeviceAllow"])
    for dev in ("char-ttyUSB", "char-usb_device", "/dev/nvmap", "/dev/nvgpu/igpu0/ctrl"):
        assert dev in allowed
    assert keys["StateDirectory"] == ["damage-rig"] and "EnvironmentFile" in keys
    assert (REPO / "systemd" / "damage-rig.env").is_file() and (REPO / "systemd" / "install.sh").is_file()


@needs_analyze
def test_review_station_unit_verifies_without_any_output(tmp_path):
    root = fake_root(tmp_path, UNIT.read_text())
    review = UNIT.with_name("damage-rig-review.service")
    (root / "etc/systemd/system" / review.name).write_text(review.read_text())
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", review.name],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


STATION = UNIT.with_name("damage-rig-review-station.service")


@needs_analyze
def test_review_station_network_unit_verifies_without_any_output(tmp_path):
    root = fake_root(tmp_path, UNIT.read_text())
    (root / "etc/systemd/system/damage-rig-review.service").write_text(
        UNIT.with_name("damage-rig-review.service").read_text())
    (root / "etc/systemd/system" / STATION.name).write_text(STATION.read_text())
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", STATION.name],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_review_station_unit_binds_beyond_loopback_only_with_its_token_as_a_credential():
    text = STATION.read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1)
    assert "--host 0.0.0.0" in exec_start
    assert "--token-file ${CREDENTIALS_DIRECTORY}/review-token" in exec_start
    assert re.search(r"^LoadCredential=review-token:/etc/damage-rig/review\.token$", text, re.MULTILINE)
    assert "RIG_REVIEW_TOKEN" not in text  # never in the environment (visible in /proc)
    assert re.search(r"^Conflicts=damage-rig-review\.service$", text, re.MULTILINE)


def test_review_station_unit_command_needs_the_token(tmp_path):
    """Run the unit's ExecStart as systemd would (credential directory, config) and knock without the token."""
    import os
    import socket
    import sys
    import time
    import urllib.error
    import urllib.request

    import yaml
    from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA

    from tests.helpers.review import make_state

    make_state(tmp_path / "state", n=4)
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg["calibration"] = str(PACKAGE_DATA / "demo_calib.yaml")
    cfg["storage"]["state_dir"] = str(tmp_path / "state")
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(cfg))
    creds = tmp_path / "creds"
    creds.mkdir()
    token = "0123456789abcdef0123456789abcdef"
    (creds / "review-token").write_text(token + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = re.search(r"^ExecStart=(.*)$", STATION.read_text(), re.MULTILINE).group(1)
    line = (line.replace("${RIG_CONFIG}", str(tmp_path / "rig.yaml"))
            .replace("${CREDENTIALS_DIRECTORY}", str(creds)).replace("--port 8080", f"--port {port}"))
    argv = [sys.executable, "-m", "damage_rig.rig.cli"] + line.split()[1:]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/api/items"
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(url, timeout=5)
        assert no_token.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as res:
            assert res.status == 200 and b"it000002" in res.read()
        # a browser opens /?token= once: the cookie it gets carries the token from then on
        import http.cookiejar

        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with browser.open(f"http://127.0.0.1:{port}/?token={token}", timeout=5) as res:
            assert res.status == 200 and res.url.endswith(f":{port}/") and b"csrf-token" in res.read()
        assert [c.name for c in jar] == ["rig_review_token"]
        with browser.open(url, timeout=5) as res:
            assert res.status == 200
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "beyond loopback" in out
