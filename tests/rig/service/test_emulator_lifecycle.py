"""Issue 13 defect 9: the controller emulator's lifecycle through the CLI: it dies with a SIGKILLed
`rig run`, and `rig divert emulate --port PATH` never deletes a file that is not its own symlink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import faults as ft
from tests.helpers.listener import NotifyListener


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_emulator_does_not_outlive_a_sigkilled_rig_run(tmp_path, model_dir):
    cfg = ft.demo_config(tmp_path, model_dir)
    with NotifyListener(tmp_path / "notify.sock") as lis:
        proc = ft.start_rig(cfg, lis)
        try:
            assert lis.wait("READY", timeout=90) is not None
            kids = ft.children_of(proc.pid)
            assert kids, "rig run spawned no emulator"
            proc.kill()
            proc.wait(10)
            end = time.monotonic() + 5
            while time.monotonic() < end and any(alive(k) for k in kids):
                time.sleep(0.05)
            left = [k for k in kids if alive(k)]
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    for k in left:
        os.kill(k, signal.SIGTERM)
    assert not left, f"emulator pid(s) {left} outlived the SIGKILLed rig run"


def test_emulate_port_refuses_to_replace_a_regular_file(tmp_path):
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "divert", "emulate", "--port", str(victim)],
                       capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1 and "not a symlink" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert victim.read_text() == "keep me"
