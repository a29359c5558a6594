"""Issue 13 defect 9: dataset reading refuses hostile items.jsonl lines with one clear line each,
through `rig dataset check` as a separate process (no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from damage_rig.rig.dataset import read_dataset
from damage_rig.rig.foundation.errors import DatasetError


def item(**views) -> dict:
    return {"id": "a", "sku": "s", "split": "train", "label": "ok", "damage": [], "printed_damage": False,
            "views": views or {"top": {"rgb": "img/a_top.png", "depth": None, "mask": None}}}


def write(tmp_path, line: bytes):
    (tmp_path / "dataset.yaml").write_text("name: t\nviews: [top]\ndepth_units_mm: 1.0\n")
    (tmp_path / "items.jsonl").write_bytes(line + b"\n")
    return tmp_path


@pytest.mark.parametrize("line, words", [
    (b"[" * 30_000 + b"]" * 30_000, "too deeply"),
    (b'{"id": "\xff\xfe"}', "not UTF-8"),
    (json.dumps(item()).replace('"printed_damage": false', '"printed_damage": ' + "9" * 5000).encode(), "too large"),
    (json.dumps(item(top={"rgb": "/etc/passwd"})).encode(), "must be relative"),
    (json.dumps(item(top={"rgb": "../../secret.png"})).encode(), "without '..'"),
    (json.dumps(item(top={"rgb": "img/x.png", "mask": "img/../../x.png"})).encode(), "without '..'"),
    (b'{"id": NaN}', "not a JSON number"),
    (b"x" * 70_000, "longer than"),
])
def test_hostile_lines_are_refused(tmp_path, line, words):
    root = write(tmp_path, line)
    with pytest.raises(DatasetError, match=words):
        read_dataset(root, check_files=False)


def test_cli_says_it_in_one_line(tmp_path):
    root = write(tmp_path, b"[" * 30_000 + b"]" * 30_000)
    r = subprocess.run([sys.executable, "-m", "damage_rig.rig.cli", "dataset", "check", str(root)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "items.jsonl:1" in r.stderr, r.stderr
