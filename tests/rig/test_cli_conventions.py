"""Issue 17 deliverable 1: the newcomer path (demo -> status -> review with no flags) and the
conventions every subcommand shares (--json [FILE], -v after the subcommand, --no-progress,
exit codes, output paths checked before the work), through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from argparse import Namespace

import pytest
from damage_rig.rig.cli import build_parser, main


def rig(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)


@pytest.fixture
def xdg_state(tmp_path, monkeypatch):
    """A private $XDG_STATE_HOME: the demo's default state never lands in the real home."""
    root = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(root))
    return root


@pytest.mark.slow
def test_demo_then_status_and_review_find_its_state_with_no_flags(xdg_state, tmp_path):
    env = dict(os.environ)
    summary = tmp_path / "summary.json"
    r = rig("demo", "--items", "6", "--json", str(summary), env=env, timeout=240)
    assert r.returncode == 0, r.stderr
    state = xdg_state / "damage-rig" / "demo"
    assert (state / "events.db").is_file() and (state / "status.json").is_file()
    # a short human summary and the next commands; no raw JSON, no progress bars in a pipe
    out = r.stdout
    assert "6 items, 6 decisions" in out and "caught" in out and "false diverts" in out and "p50" in out
    assert "rig status " in out and "rig review " in out and str(state) in out
    assert "{" not in out and "\r" not in out + r.stderr
    machine = json.loads(summary.read_text())
    assert machine["items"] == 6 and machine["decisions"] == 6 and machine["state_dir"] == str(state)

    s = rig("status", "--json", env=env)  # no --state, no --config: the demo's state
    assert "Traceback" not in s.stderr
    h = json.loads(s.stdout)
    assert h["decisions"] == 6 and h["items"] == 6 and h["state_dir"] == str(state)
    assert "demo" in h["problems"][0] and s.returncode == 2  # a monitor's code: nothing runs now
    text = rig("status", env=env)
    assert "decisions 6" in text.stdout and "rig demo" in text.stdout

    from damage_rig.rig.commands.status import (
        state_dir_from,  # rig review resolves its state the same way
    )

    assert state_dir_from(Namespace(state=None, config=None)) == state

    # a second demo replaces the first one's state: status reports the new run only
    r = rig("demo", "--items", "2", "--json", "-", env=env, timeout=240)
    assert r.returncode == 0 and json.loads(r.stdout)["decisions"] == 2  # --json -: JSON alone on stdout
    assert "rig status" in r.stderr  # the human text moved to stderr
    assert json.loads(rig("status", "--json", "-", env=env).stdout)["decisions"] == 2


def test_missing_output_folder_fails_before_the_demo_runs(xdg_state, capsys):
    t0 = time.monotonic()
    assert main(["demo", "--items", "50", "--json", "/no/such/dir/x.json"]) == 1
    assert time.monotonic() - t0 < 5  # not after 50 items on the belt
    err = capsys.readouterr().err
    assert "--json /no/such/dir/x.json" in err and "/no/such/dir does not exist" in err
    assert not (xdg_state / "damage-rig").exists()


def test_unwritable_output_fails_clearly(tmp_path, capsys):
    assert main(["status", "--state", str(tmp_path), "--json", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert main(["status", "--state", str(tmp_path), "--json", str(ro / "h.json")]) == 1
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_status_json_to_a_file_or_stdout(tmp_path, capsys):
    out = tmp_path / "h.json"
    assert main(["status", "--state", str(tmp_path), "--json", str(out)]) == 2  # never ran here: down
    assert json.loads(out.read_text())["state"] == "down"
    assert "health: DOWN" in capsys.readouterr().out  # the text still goes to the terminal
    assert main(["status", "--state", str(tmp_path), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["state"] == "down"


def test_verbose_and_no_progress_before_or_after_every_subcommand():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) >= 15
    for name, p in sub.choices.items():
        opts = {s for a in p._actions for s in a.option_strings}
        assert {"-v", "--verbose", "--no-progress"} <= opts, name
    a = parser.parse_args(["status", "-vv", "--no-progress"])
    assert a.verbose_after == 2 and a.no_progress
    a = parser.parse_args(["-v", "status"])
    assert a.verbose == 1 and a.verbose_after == 0


def test_json_is_one_convention():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        js = [a for a in p._actions if "--json" in a.option_strings]
        if js:  # --json [FILE]: a file, or stdout with no FILE or '-'
            assert js[0].nargs == "?" and js[0].const == "-", name
    assert {n for n, p in sub.choices.items() if any("--json" in a.option_strings for a in p._actions)} >= {
        "demo", "status", "tune", "bench", "calibrate", "align"}


def test_enroll_list_of_a_missing_model_fails_clearly(tmp_path):
    r = rig("enroll", "--model", "/no/such/dir", "--list")
    assert r.returncode == 1 and "model folder /no/such/dir does not exist" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = rig("enroll", "--model", str(tmp_path), "--list", "-v")  # a folder that is no model
    assert r.returncode == 1 and "no gallery" in r.stderr


def test_usage_errors_exit_2_and_name_the_option():
    r = rig("demo", "--items", "many")
    assert r.returncode == 2 and "--items" in r.stderr


def test_calibrate_strict_fail_exits_1(tmp_path, monkeypatch, capsys):
    """A FAIL verdict under --strict is exit 1; the calibration file is still written."""
    from types import SimpleNamespace

    from damage_rig.calibration import pipeline

    figures = {"cameras": {"top": {"verdict": "fail", "rms_px": 0.9, "joint_rms_px": 1.0, "views": 3,
                                   "coverage": {"fraction": 0.3},
                                   "reasons": [{"message": "top: corners cover only the left half"}]}},
               "reference": "top", "verdict": "fail", "consistency_mm": {}}
    written = []
    monkeypatch.setattr(pipeline, "run_calibration",
                        lambda *a, **k: SimpleNamespace(calibration="C", figures=figures))
    monkeypatch.setattr(pipeline, "write_calibration", lambda c, path: written.append(path))
    args = ["calibrate", "--captures", str(tmp_path), "--board", "b.yaml", "--out", str(tmp_path / "c.yaml")]
    assert main(args) == 0 and written  # without --strict: written, exit 0
    assert main([*args, "--strict"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main([*args, "--strict", "--json", str(tmp_path / "no" / "f.json")]) == 1  # checked before the work
    assert len(written) == 2 and "does not exist" in capsys.readouterr().err


def test_before_any_demo_status_and_review_say_what_to_run(xdg_state):
    env = dict(os.environ)
    s = rig("status", env=env)
    assert s.returncode == 2 and "run `rig demo`" in s.stdout
    r = rig("review", "--port", "0", env=env)
    assert r.returncode == 1 and "run `rig demo` first" in r.stderr and "Traceback" not in r.stderr
