"""Issue 13 defect 9: `rig status` and `rig review` on a corrupt or read-only events.db answer with a
clear line, never a traceback (the CLI as a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from damage_rig.rig.events import EventLog

from tests.helpers import faults as ft
from tests.helpers.events import make_record


def rig(*args):
    return subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_corrupt_event_log(tmp_path):
    (tmp_path / "events.db").write_bytes(b"\x00garbage" * 500)
    r = rig("status", "--state", str(tmp_path))  # exit 2: no service ran here (issue 16's health check)
    assert r.returncode == 2 and "UNREADABLE" in r.stdout and "Traceback" not in r.stderr, r.stderr
    r = rig("status", "--state", str(tmp_path), "--json")
    assert "not a database" in json.loads(r.stdout)["event_log_error"]
    r = rig("review", "--state", str(tmp_path), "--port", "0")
    assert r.returncode == 1 and "cannot open the event log" in r.stderr and "Traceback" not in r.stderr


def test_read_only_state_directory(tmp_path):
    state = tmp_path / "state"
    why = ft._mount_tmpfs(state, "8m")
    if why is not None:
        pytest.skip(f"a read-only filesystem needs a tmpfs mount: {why}")
    try:
        with EventLog(state) as log:
            for i in range(3):
                log.record(make_record(i))
        ro = subprocess.run(["mount", "-o", "remount,ro", str(state)], capture_output=True, text=True, check=False)
        assert ro.returncode == 0, ro.stderr
        r = rig("status", "--state", str(state))
        assert r.returncode == 2 and "3 items" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
        r = rig("review", "--state", str(state), "--port", "0")
        assert r.returncode == 1 and "Traceback" not in r.stderr and "event log" in r.stderr, r.stderr
    finally:
        subprocess.run(["umount", "-l", str(state)], capture_output=True, timeout=10, check=False)
