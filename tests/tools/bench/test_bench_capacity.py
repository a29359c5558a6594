"""`rig bench --capacity`'s accounting: CPU time by thread and by process, and the figures made of it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from damage_rig.tools.bench.cpu import CpuMeter, account, load_state

SPIN_S = 0.3  # of CPU time, not wall time: the assertions hold however loaded the machine is


def _spin_cpu(seconds: float) -> None:
    t0 = time.thread_time()
    x = 0
    while time.thread_time() - t0 < seconds:
        x += 1


def test_account_separates_the_rig_from_the_model_and_the_stand_ins():
    # 10 s of process CPU for 100 items, 4 s of it inside inference; stand-ins 2 s; the model alone
    # took 3 s for 120 items
    a = account(process_s=10.0, model_in_run_s=4.0, stand_ins_s=2.0, items=100, model_alone_s=3.0,
                model_alone_items=120)
    assert a["rig_cpu_ms_per_item"] == 60.0
    assert a["model_cpu_ms_per_item"] == 25.0
    assert a["model_cpu_ms_per_item_in_run"] == 40.0
    assert a["rig_to_model_cpu"] == 2.4
    assert a["stand_in_cpu_share"] == round(2.0 / 12.0, 4)
    with pytest.raises(ValueError, match="at least one item"):
        account(1.0, 0.5, 0.0, 0, 1.0, 10)


def test_meter_gives_each_thread_and_each_stand_in_its_own_cpu_time():
    code = ("import sys, time\nt0 = time.process_time()\n"
            f"while time.process_time() - t0 < {SPIN_S}: pass\n"
            "print('spun', flush=True)\nsys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter = CpuMeter({"driver": child.pid})
        a = meter.snapshot()
        spun, done = threading.Event(), threading.Event()

        def work():  # a stage thread: alive when the run's second snapshot is taken
            _spin_cpu(SPIN_S)
            spun.set()
            done.wait(30)

        busy = threading.Thread(target=work, name="busy")
        busy.start()
        assert spun.wait(30)
        assert child.stdout.readline().strip() == "spun"
        b = meter.snapshot()
        done.set()
        busy.join()
    finally:
        child.stdin.close()
        child.wait(10)
    d = CpuMeter.delta(a, b)
    tick = 0.03  # /proc counts in clock ticks (10 ms)
    assert d["threads_s"]["busy"] >= SPIN_S - tick
    assert d["stand_ins_s"]["driver"] >= SPIN_S - tick
    # the spinning thread is this process's CPU; the child's is not
    assert d["process_s"] >= SPIN_S - tick
    assert d["threads_s"].get("MainThread", 0.0) < SPIN_S / 2


def test_load_state_flags_a_machine_loaded_beyond_its_cores(monkeypatch):
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 3.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    s = load_state()
    assert s == {"load_avg": [5.0, 3.0, 1.0], "cores": 2, "overloaded": True}
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 3.0, 1.0))
    assert load_state()["overloaded"] is False


@pytest.mark.slow
def test_capacity_run_accounts_for_every_frame_set(tmp_path, monkeypatch):
    """A short closed-loop run on the demo rig: every injected frame set is decided once, the CPU
    figures add up, the stand-ins' CPU is counted apart, and the settings are reported."""
    from damage_rig.rig.config import DEMO_CONFIG, check_config
    from damage_rig.tools.bench.capacity import run_capacity
    from damage_rig.tools.bench.frames import frame_sets

    monkeypatch.setenv("DAMAGE_RIG_CACHE", str(tmp_path / "cache"))
    cfg = check_config(DEMO_CONFIG)
    r = run_capacity(cfg, items=6, sets=2, model_seconds=0.3, in_flight=2)
    r.pop("spans")
    outcomes = r["outcomes"]
    assert sum(outcomes.values()) + r["injection"]["no_blob"] == 6
    assert r["scored"] == outcomes.get("score", 0) >= 2
    assert r["capacity_items_per_s"] > 0 and r["model_only_items_per_s"] > 0
    assert r["batch"] >= 1 and r["views_per_item"] == 2
    # rig + model-in-run CPU is the process's CPU
    rig_s = r["rig_cpu_ms_per_item"] * r["scored"] / 1000.0
    model_s = r["model_cpu_ms_per_item_in_run"] * r["scored"] / 1000.0
    assert rig_s + model_s == pytest.approx(r["cpu_s"]["process_s"], abs=0.01 * r["scored"])
    assert set(r["cpu_s"]["stand_ins_s"]) == {"frame_server", "controller_emulator"}
    assert 0.0 <= r["stand_in_cpu_share"] < 1.0
    assert r["threads"]["blas_threads"] in (1, None) and r["threads"]["opencv_threads"] == 1
    assert r["threads"]["inference_spinning"] == "off"
    assert {"prepare", "infer", "score"} <= set(r["cpu_s"]["threads_s"])
    assert r["stages"]["preprocess"]["cpu_ms_per_item"] > 0
    # the frame sets were rendered once: the same settings find them in the cache
    assert frame_sets(cfg, None, 2) == frame_sets(cfg, None, 2)
