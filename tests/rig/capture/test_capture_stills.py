"""`rig capture --stills`: synchronised stills of the sim board scene, live coverage, the layout rig calibrate reads."""

from __future__ import annotations

import io
import re
import threading

import cv2
import numpy as np
import pytest
import yaml
from damage_rig.calibration.board import load_board
from damage_rig.calibration.detect import detect_all
from damage_rig.rig.capture.base import Grab
from damage_rig.rig.capture.stills import StillTaker
from damage_rig.rig.cli import main
from damage_rig.rig.config import DEMO_CONFIG, PACKAGE_DATA
from damage_rig.rig.foundation.errors import DeviceError


@pytest.fixture
def board_rig(tmp_path):
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data["calibration"] = str(PACKAGE_DATA / "demo_calib.yaml")
    data["sim"] = {"scene": "charuco", "board_hold_s": 0.3}
    p = tmp_path / "board-rig.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_interval_stills_land_where_calibrate_reads_them(board_rig, tmp_path, capsys):
    out = tmp_path / "caps"
    assert main(["capture", "--stills", str(out), "--config", str(board_rig), "--every", "0.35", "--count", "3"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.startswith("still_")]
    assert [ln.split(":")[0] for ln in lines] == ["still_001", "still_002", "still_003"]
    for cam in ("top", "side"):
        assert sorted(p.name for p in (out / cam).iterdir()) == [f"still_00{i}.png" for i in (1, 2, 3)]
    # what the terminal said matches what rig calibrate's detection finds in the saved files
    said = {cam: sum(int(n) >= 8 for n in re.findall(rf"{cam}\s+(\d+) corners", text)) for cam in ("top", "side")}
    found = detect_all(out, load_board(out / "board.yaml"), progress=False)
    assert {cam: len(cc.views) for cam, cc in found.items()} == said
    assert said["top"] >= 1
    last = re.findall(r"top (\d+)% \((\d+) stills\)", lines[-1])[0]
    assert int(last[0]) > 0 and int(last[1]) == said["top"]
    pic = cv2.imread(str(out / "coverage.png"))
    assert pic is not None and pic.shape[1] > 900  # one panel per camera
    # green where the board was seen: the picture is not all one colour
    assert len(np.unique(pic.reshape(-1, 3), axis=0)) > 50
    assert "rig calibrate --captures" in text


def test_stills_on_enter_continue_the_numbering(board_rig, tmp_path, monkeypatch, capsys):
    out = tmp_path / "caps"
    (out / "top").mkdir(parents=True)
    cv2.imwrite(str(out / "top" / "still_007.png"), np.zeros((4, 4), np.uint8))  # an earlier session
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\nq\n"))
    assert main(["capture", "--stills", str(out), "--config", str(board_rig), "--cameras", "top"]) == 0
    assert sorted(p.name for p in (out / "top").iterdir()) == ["still_007.png", "still_008.png", "still_009.png"]
    assert not (out / "side").exists()
    assert "2 still(s) per camera" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--count", "3"], "--count N goes with --every"),
    (["--every", "0"], "--every 0"),
    (["--cameras", "front"], "not in the config's cameras"),
])
def test_bad_capture_arguments_fail_clearly(board_rig, tmp_path, capsys, args, message):
    assert main(["capture", "--stills", str(tmp_path / "c"), "--config", str(board_rig), *args]) == 1
    assert message in capsys.readouterr().err


class _Clocked:
    """A camera whose frame n is at n * 33.3 ms + offset."""

    def __init__(self, offset_ms):
        self.offset, self.n, self.finished = offset_ms, 0, False
        self.go = threading.Event()

    def open(self):
        pass

    def grab(self, timeout_s):
        if self.n > 40:
            self.go.wait(timeout_s)
            return None
        self.n += 1
        return Grab(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint16), self.n * 33.3 + self.offset,
                    self.n, 0.0)

    def close(self):
        pass


def test_still_sets_are_matched_by_timestamp():
    taker = StillTaker({"a": _Clocked(0.0), "b": _Clocked(3.0)}, tolerance_ms=8.0).start()
    try:
        got = taker.take(2.0)
        assert abs(got["a"].timestamp_ms - got["b"].timestamp_ms) <= 8.0
        assert got["a"].frame_number == got["b"].frame_number
    finally:
        taker.stop()
    taker = StillTaker({"a": _Clocked(0.0), "b": _Clocked(15.0)}, tolerance_ms=8.0).start()
    try:
        with pytest.raises(DeviceError, match="no synchronised set of frames"):
            taker.take(0.5)
    finally:
        taker.stop()


def test_one_key_press_per_still_on_a_terminal(board_rig, tmp_path):
    """On a terminal a still takes one key (no Enter), q finishes, and the terminal is given back."""
    import os
    import subprocess
    import sys
    import termios
    import time

    out = tmp_path / "caps"
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-m", "damage_rig.rig.cli", "capture", "--stills", str(out),
                             "--config", str(board_rig), "--cameras", "top"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while termios.tcgetattr(slave)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for cbreak mode: the command is reading keys
        for key in (b" ", b"x"):
            os.write(master, key)
            n = len(list((out / "top").glob("*.png"))) if (out / "top").exists() else 0
            while time.monotonic() < deadline and len(list((out / "top").glob("*.png"))) == n:
                time.sleep(0.05)
        os.write(master, b"q")
        text = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, text
    assert sorted(p.name for p in (out / "top").iterdir()) == ["still_001.png", "still_002.png"]
    assert after[3] == before[3]  # line mode restored
