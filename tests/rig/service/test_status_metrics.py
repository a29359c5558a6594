"""Status file (atomic), `rig status` text/JSON and its exit codes (healthy 0, degraded 1, down 2)."""

from __future__ import annotations

import json
import os
import time

import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.events import EventLog
from damage_rig.rig.service.status import read_status, write_status

from tests.helpers.events import make_record

STATUS = {"state": "running", "pid": 4242,
          "cameras": {"top": {"fps": 29.8, "drops": 3}, "side": {"fps": 30.0, "drops": 0, "connected": False}},
          "inference": {"backend": "onnxruntime", "why": "tensorrt not installed"},
          "model_version": "test-1",
          "controller": {"link": "up", "port": "/dev/pts/7", "last_heartbeat_s": 0.1, "faults": 2}}


def populated(state):
    with EventLog(state, save_crops=False) as log:
        for i in range(5):
            log.record(make_record(i, "divert" if i in (1, 3) else "pass", with_images=False))
        log.mark_acked("it000001", 1.7e9)
        log.mark_result("it000003", acked=False, reason="late")
    write_status(state, STATUS)


def test_status_file_is_atomic_and_replaced(tmp_path):
    assert read_status(tmp_path) is None
    write_status(tmp_path, {"state": "starting"})
    write_status(tmp_path, STATUS)
    got = read_status(tmp_path)
    assert got["state"] == "running" and got["cameras"]["top"]["drops"] == 3 and got["age_s"] < 60
    assert sorted(os.listdir(tmp_path)) == ["status.json"]  # no temp files left behind


def test_rig_status_text_and_json(tmp_path, capsys):
    populated(tmp_path)
    assert main(["status", "--state", str(tmp_path)]) == 1  # degraded: the side camera is disconnected
    out = capsys.readouterr().out
    assert "service: running  pid 4242" in out
    assert "camera top" in out and "drops 3" in out and "DISCONNECTED" in out
    assert "inference: onnxruntime (tensorrt not installed)   model test-1" in out
    assert "controller link: up" in out and "faults 2" in out
    assert "5 items, 2 diverted (1 acked), 3 passed" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("00:") or " it0000" in ln]
    assert [ln.split()[1] for ln in lines] == [f"it00000{i}" for i in (4, 3, 2, 1, 0)]
    assert "NOT ACKED" in lines[1] and "late" in lines[1]
    assert "health: DEGRADED (camera side disconnected)" in out
    assert main(["status", "--state", str(tmp_path), "--json", "--recent", "2"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["divert_acked"] == 1 and [r["id"] for r in info["recent"]] == ["it000004", "it000003"]


def test_rig_status_on_an_empty_state_dir(tmp_path, capsys):
    assert main(["status", "--state", str(tmp_path)]) == 2  # down: never ran here
    out = capsys.readouterr().out
    assert "no status file" in out and "event log: none yet" in out


HEALTHY = {"state": "running", "pid": 1, "cameras": {"top": {"fps": 30.0, "drops": 0, "connected": True}},
           "controller": {"link": "up", "port": "/dev/ttyUSB0", "last_heartbeat_s": 0.12, "faults": 0},
           "counters": {"items": 40, "decisions": 40, "diverted": 5, "late": 1, "failsafe": 2},
           "decisions": {"failsafe_reasons": {"camera_missing": 2}, "by_reason": {"score": 37, "late": 1,
                                                                                    "camera_missing": 2},
                         "latency_ms": {"p50": 120.0, "p99": 240.0, "n": 40, "window_s": 60.0}},
           "event_log": {"error": None, "backlog": 0, "records_dropped": 0}, "stuck": []}


def status_of(tmp_path, capsys, **changes) -> tuple[int, dict]:
    write_status(tmp_path, {**HEALTHY, **changes})
    code = main(["status", "--state", str(tmp_path), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_status_healthy_exits_0_with_the_figures(tmp_path, capsys):
    code, j = status_of(tmp_path, capsys)
    assert code == 0 and j["state"] == "healthy" and j["problems"] == []
    assert (j["decisions"], j["diverted"], j["late"], j["failsafe"]) == (40, 5, 1, 2)
    assert j["failsafe_reasons"] == {"camera_missing": 2}
    assert j["latency_ms"]["p50"] == 120.0 and j["latency_ms"]["p99"] == 240.0
    assert j["link"] == {"state": "up", "port": "/dev/ttyUSB0", "heartbeat_age_s": 0.12}
    assert main(["status", "--state", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "health: HEALTHY" in out and "port /dev/ttyUSB0  last heartbeat 0.1 s ago" in out
    assert "late 1  fail-safe 2 (camera_missing 2)" in out and "p50 120 ms  p99 240 ms" in out


@pytest.mark.parametrize("changes, problem", [
    ({"controller": {"link": "down", "last_error": "no heartbeat for 1.2 s"}}, "controller link down"),
    ({"cameras": {"top": {"fps": 0.0, "connected": False}}}, "camera top disconnected"),
    ({"event_log": {"error": "disk I/O error", "error_for_s": 12.0, "backlog": 40, "records_dropped": 0}},
     "writes failing: event log not writable for 12 s (disk I/O error); 40 record(s) waiting"),
    ({"stuck": ["infer"]}, "stuck stages: infer"),
    ({"mqtt": {"connected": False, "outbox_depth": 12}}, "MQTT broker unreachable (12 events"),
    ({"state": "starting"}, "service starting"),
])
def test_status_degraded_exits_1_naming_the_problem(tmp_path, capsys, changes, problem):
    code, j = status_of(tmp_path, capsys, **changes)
    assert code == 1 and j["state"] == "degraded"
    assert any(problem in p for p in j["problems"]), j["problems"]


def test_status_down_exits_2_when_stopped_stale_or_never_run(tmp_path, capsys):
    code, j = status_of(tmp_path, capsys, state="stopped")
    assert code == 2 and j["state"] == "down" and "stopped" in j["problems"][0]
    write_status(tmp_path, HEALTHY)
    path = tmp_path / "status.json"
    data = json.loads(path.read_text())
    data["updated_at"] = time.time() - 3.5  # older than 3 s: killed or hung
    path.write_text(json.dumps(data))
    assert main(["status", "--state", str(tmp_path), "--json"]) == 2
    assert "stopped, killed or hung" in json.loads(capsys.readouterr().out)["problems"][0]
    assert main(["status", "--state", str(tmp_path / "never")]) == 2
    assert "health: DOWN (not running: no status file" in capsys.readouterr().out
    path.write_text("{not json")
    assert main(["status", "--state", str(tmp_path), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["state"] == "down"
