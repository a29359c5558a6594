"""The event log: rows, crops, acknowledgements, retention, crash safety and clear disk errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from damage_rig.rig import events as ev
from damage_rig.rig.events import EventLog, EventLogError, UnknownItemError

from tests.helpers.events import make_record


def test_record_roundtrip_crops_and_wal(tmp_path):
    with EventLog(tmp_path) as log:
        rec = make_record(3)
        log.record(rec)
        got = log.get(rec.id)
        assert got["decision"] == "divert" and got["acked"] is False and got["reason"] == "score"
        assert got["sku_pred"] == "sku-a" and got["score"] == pytest.approx(0.9)
        assert got["views"] == ["side", "top"] and got["truth"] == {"damaged": True}
        # the JPEG crop decodes to the image we gave (within JPEG error)
        img = cv2.cvtColor(cv2.imread(got["crops"]["top"]["rgb"]), cv2.COLOR_BGR2RGB)
        smooth = (img.astype(int) - rec.views["top"]["rgb"].astype(int))[..., :2]  # channel 2 is noise
        assert np.abs(smooth).mean() < 3.0
        # the heatmap keeps its peak's position and scale
        heat = cv2.imread(got["crops"]["top"]["heatmap"], cv2.IMREAD_GRAYSCALE)
        assert np.unravel_index(heat.argmax(), heat.shape) == (3, 3)
        assert got["crops"]["top"]["heat_max"] == pytest.approx(3.0)
    conn = sqlite3.connect(tmp_path / ev.DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_acks_results_recent_and_counts(tmp_path):
    with EventLog(tmp_path, save_crops=False) as log:
        for i in range(6):
            log.record(make_record(i, "divert" if i % 2 == 0 else "pass", with_images=False))
        log.mark_acked("it000000", 1.7e9 + 10)
        log.mark_acked("it000002", 1.7e9 + 12)
        log.mark_result("it000004", acked=False, reason="late")
        assert [r["id"] for r in log.recent(3)] == ["it000005", "it000004", "it000003"]
        late = log.get("it000004")
        assert late["reason"] == "late" and late["decided_reason"] == "score" and not late["acked"]
        c = log.counts()
        assert (c["items"], c["divert"], c["pass"], c["divert_acked"], c["divert_unacked"]) == (6, 3, 3, 2, 1)
        assert c["by_reason"] == {"score": 5, "late": 1}
        with pytest.raises(UnknownItemError, match="nope"):
            log.get("nope")
        with pytest.raises(UnknownItemError):
            log.mark_acked("nope", 0.0)
        with pytest.raises(EventLogError, match="UNIQUE"):
            log.record(make_record(1, with_images=False))
        with pytest.raises(ValueError, match="decision"):
            log.record(make_record(9, "maybe", with_images=False))


def test_retention_by_age_and_size(tmp_path):
    t0 = 1_700_000_000.0
    log = EventLog(tmp_path, retention_days=1.0, max_crops_mb=1000)
    for i in range(10):  # items 0..4 two days old, 5..9 fresh
        log.record(make_record(i, "divert" if i % 2 else "pass", t0=t0 - (2 * 86400 if i < 5 else 0)))
    assert log.prune(now=t0 + 100) == 5
    for i in range(10):
        row = log.get(f"it{i:06d}")
        assert row["crops_deleted"] == (i < 5)
        assert Path(row["crops"]["top"]["rgb"]).exists() == (i >= 5)
    # size budget: keep roughly two items' worth; passes go first, unreviewed diverts last
    per_item = log._conn.execute("SELECT crop_bytes FROM items WHERE id='it000005'").fetchone()[0]
    log.max_crop_bytes = int(per_item * 2.5)
    log.prune(now=t0 + 100)
    alive = [r["id"] for r in log.recent(10) if not r["crops_deleted"]]
    assert alive == ["it000009", "it000007"]  # the two newest diverts
    assert log.counts()["items"] == 10  # rows are never removed by retention
    log.close()


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("a file where the state directory should be")
    with pytest.raises(EventLogError, match="state directory"):
        EventLog(not_a_dir)


def test_full_disk_keeps_recorded_rows(tmp_path):
    log = EventLog(tmp_path, save_crops=False)
    # SQLite's own "database or disk is full" path: cap the file at its current size plus a little
    pages = log._conn.execute("PRAGMA page_count").fetchone()[0]
    log._conn.execute(f"PRAGMA max_page_count = {pages + 3}")
    recorded = []
    with pytest.raises(EventLogError, match="full"):
        for i in range(10_000):
            rec = make_record(i, with_images=False)
            rec.truth = {"padding": "x" * 2000}
            log.record(rec)
            log.mark_acked(rec.id, 1.0)
            recorded.append(rec.id)
    assert len(recorded) > 0
    log.close()
    with EventLog(tmp_path, save_crops=False) as again:
        assert again.counts()["items"] == len(recorded)
        assert all(again.get(i)["acked"] for i in recorded)


def test_crop_write_failure_still_records_the_row(tmp_path, monkeypatch):
    log = EventLog(tmp_path)

    def no_space(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    log.record(make_record(1))
    monkeypatch.undo()
    row = log.get("it000001")
    assert row["decision"] == "divert" and row["crop_bytes"] == 0
    log.close()


WRITER = textwrap.dedent("""
    import time
    from tests.helpers.events import make_record
    from damage_rig.rig.events import EventLog
    log = EventLog({state!r}, save_crops=True)
    i = 0
    while True:
        rec = make_record(i, "divert" if i % 3 else "pass", size=32)
        log.record(rec)
        if rec.decision == "divert":
            log.mark_acked(rec.id, time.time())
            print(rec.id, flush=True)   # the controller's ACK has been made durable
        i += 1
""")


def test_sigkill_mid_run_loses_no_acknowledged_row(tmp_path):
    repo = Path(__file__).resolve().parents[2]  # `python -c` imports tests.helpers from the working directory
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(state=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True, cwd=repo)
    acked = []
    deadline = time.monotonic() + 60
    while len(acked) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: the writer never stops on its own
    proc.wait()
    proc.stdout.close()
    assert len(acked) >= 40, "writer did not make progress"
    with EventLog(tmp_path) as log:
        for item_id in acked:
            assert log.get(item_id)["acked"], f"acknowledged item {item_id} lost"
        assert log.counts()["items"] >= len(acked)
    assert sqlite3.connect(tmp_path / ev.DB_NAME).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
