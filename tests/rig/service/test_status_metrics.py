"""Status file (atomic), `rig status` text/JSON, and the loopback Prometheus endpoint."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest
from damage_rig.rig.cli import main
from damage_rig.rig.events import EventLog
from damage_rig.rig.foundation.errors import ConfigError
from damage_rig.rig.service.metrics import MetricsServer
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
    assert main(["status", "--state", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "service: running  pid 4242" in out
    assert "camera top" in out and "drops 3" in out and "DISCONNECTED" in out
    assert "inference: onnxruntime (tensorrt not installed)   model test-1" in out
    assert "controller link: up" in out and "faults 2" in out
    assert "5 items, 2 diverted (1 acked), 3 passed" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("00:") or " it0000" in ln]
    assert [ln.split()[1] for ln in lines] == [f"it00000{i}" for i in (4, 3, 2, 1, 0)]
    assert "NOT ACKED" in lines[1] and "late" in lines[1]
    assert main(["status", "--state", str(tmp_path), "--json", "--recent", "2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["divert_acked"] == 1 and [r["id"] for r in info["recent"]] == ["it000004", "it000003"]


def test_rig_status_on_an_empty_state_dir(tmp_path, capsys):
    assert main(["status", "--state", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no status file" in out and "event log: none yet" in out


def test_metrics_endpoint_serves_prometheus_text_on_loopback(tmp_path):
    populated(tmp_path)
    server = MetricsServer(tmp_path, port=0).start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert err.value.code == 404
    finally:
        server.stop()
    samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert samples["rig_up"] == "1"
    assert samples['rig_camera_drops_total{camera="top"}'] == "3"
    assert samples['rig_items_total{decision="divert"}'] == "2"
    assert samples['rig_items_total{decision="pass"}'] == "3"
    assert samples["rig_divert_acked_total"] == "1"
    assert samples['rig_items_by_reason_total{reason="late"}'] == "1"
    assert samples['rig_model_info{version="test-1",backend="onnxruntime"}'] == "1"
    assert "# TYPE rig_camera_fps gauge" in body


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_metrics_refuses_non_loopback(tmp_path, host):
    with pytest.raises(ConfigError, match="loopback only"):
        MetricsServer(tmp_path, host=host)
