"""sd_notify over a real datagram socket, and the progress-driven watchdog."""

from __future__ import annotations

import os
import threading
import time

import pytest
from damage_rig.rig.service.notify import Notifier, watchdog_timeout_s
from damage_rig.rig.service.watchdog import ProgressWatchdog

from tests.helpers.listener import NotifyListener


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_each_message(tmp_path, abstract):
    with NotifyListener(tmp_path / "notify.sock", abstract=abstract) as lis:
        n = Notifier(lis.env_value)
        assert n.ready("cameras 2/2, model test-1, controller up")
        n.status("running: 12 items")
        n.watchdog()
        n.stopping()
        msgs = [m for _, m in lis.wait_for("STOPPING")] and [m for _, m in lis.messages]
        assert msgs == [{"READY": "1", "STATUS": "cameras 2/2, model test-1, controller up"},
                        {"STATUS": "running: 12 items"}, {"WATCHDOG": "1"}, {"STOPPING": "1"}]
        n.close()


def test_notifier_is_a_noop_without_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.ready() and not n.watchdog()


def test_notifier_survives_a_vanished_manager(tmp_path):
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.watchdog() is False  # logged, not raised


def test_watchdog_timeout_from_environment():
    assert watchdog_timeout_s({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_timeout_s({}) is None and watchdog_timeout_s({"WATCHDOG_USEC": "x"}) is None


class Recorder:
    def __init__(self):
        self.sent = []

    def watchdog(self):
        self.sent.append("WATCHDOG")

    def status(self, text):
        self.sent.append("STATUS " + text)


def test_watchdog_withholds_pings_while_a_stage_is_stuck():
    rec = Recorder()
    wd = ProgressWatchdog(rec, timeout_s=10.0, stages=("capture", "infer", "divert"))
    assert wd.interval_s == 5.0 and wd.stale_s == 5.0
    assert wd.check() and rec.sent == ["WATCHDOG"]
    wd._beats["infer"] -= 60.0  # infer last progressed a minute ago
    wd._beats["divert"] -= 6.0
    assert wd.stuck() == ["infer", "divert"]
    assert not wd.check() and not wd.check()
    assert rec.sent[1:] == ["STATUS stuck: infer, divert (no progress for >5.0 s)"]  # said once
    wd.beat("infer")
    wd.beat("divert")
    assert wd.check() and rec.sent[-1] == "WATCHDOG"


def test_watchdog_thread_pings_only_during_progress(tmp_path):
    with NotifyListener(tmp_path / "wd.sock") as lis:
        wd = ProgressWatchdog(Notifier(lis.env_value), timeout_s=0.2, stale_s=0.15, stages=("capture", "infer"))
        alive = {"capture": True, "infer": True}
        stop = threading.Event()

        def stage(name):
            while not stop.is_set():
                if alive[name]:
                    wd.beat(name)
                time.sleep(0.01)

        threads = [threading.Thread(target=stage, args=(s,)) for s in alive]
        for t in threads:
            t.start()
        wd.start()
        lis.wait_for("WATCHDOG", count=3, timeout=5)
        alive["infer"] = False  # the inference stage hangs
        stuck = lis.wait_for("STATUS", timeout=5)
        assert "infer" in stuck[0][1]["STATUS"]
        n_at_stuck = len(lis.with_key("WATCHDOG"))
        time.sleep(0.5)  # several ping periods
        assert len(lis.with_key("WATCHDOG")) == n_at_stuck  # no ping while a stage is stuck
        alive["infer"] = True
        lis.wait_for("WATCHDOG", count=n_at_stuck + 3, timeout=5)  # resumes once it progresses
        stop.set()
        wd.stop()
        for t in threads:
            t.join()
