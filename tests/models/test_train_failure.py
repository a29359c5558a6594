"""Issue 13 defect 9: `rig train` that fails leaves no empty or half-made output folder."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_failed_train_removes_the_folder_it_made(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "dataset.yaml").write_text("name: t\nviews: [top]\n")
    (data / "items.jsonl").write_text('{"id": 1}\n')  # invalid: training stops at the dataset check
    out = tmp_path / "model"
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "train", "--data", str(data), "--out", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1 and "items.jsonl:1" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not out.exists()
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "note.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "train", "--data", str(data), "--out", str(keep),
                        "--no-progress"], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 1 and (keep / "note.txt").read_text() == "mine"
