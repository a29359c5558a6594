"""Host link against the controller emulator in its own process, over a real pty."""

import json
import os
import threading
import time

import pytest
from damage_rig.rig.divert import protocol as p
from damage_rig.rig.divert.base import open_link
from damage_rig.rig.divert.spawn import spawn_emulator
from damage_rig.rig.foundation.errors import DeviceError


class Results:
    """Collects DivertResults; remembers how many times each item was reported."""

    def __init__(self):
        self.by_item = {}
        self.calls = []
        self.done = threading.Condition()

    def __call__(self, res):
        with self.done:
            self.calls.append(res)
            self.by_item[res.item_id] = res
            self.done.notify_all()

    def wait(self, n, timeout=5.0):
        end = time.monotonic() + timeout
        with self.done:
            while len(self.calls) < n and time.monotonic() < end:
                self.done.wait(0.05)
        return len(self.calls) >= n


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def events(em, kind):
    return [e for e in em.gate_log() if e["event"] == kind]


@pytest.fixture
def emulator(tmp_path):
    ems = []

    def start(**kw):
        kw.setdefault("log_path", tmp_path / f"gate{len(ems)}.jsonl")
        em = spawn_emulator(**kw)
        ems.append(em)
        return em

    yield start
    for em in ems:
        em.stop()


def test_gate_fires_at_the_commanded_position_and_time(emulator):
    speed, cpm, gate_distance = 1.0, 1000.0, 0.25
    em = emulator(speed_mps=speed, counts_per_m=cpm)
    with open_link(em.port, heartbeat_period_ms=50, counts_per_m=cpm) as link:
        assert link.wait_ready(5.0)
        assert wait_for(lambda: link.speed_mps is not None)
        time.sleep(0.3)  # a few heartbeats for the clock model
        # the clock model agrees with the emulator's own belt (same monotonic clock)
        t0 = events(em, "start")[0]["t_mono"]
        now = time.monotonic()
        assert abs(link.position_at(now) - (now - t0) * speed * cpm) < 20  # < 20 mm
        assert link.speed_mps == pytest.approx(speed, rel=0.02)

        res = Results()
        captured = {}
        for item in range(1, 6):
            t_capture = time.monotonic()
            # decision: the item reaches the gate gate_distance after its capture position
            fire_at = link.position_at(t_capture) + int(gate_distance * cpm)
            captured[item] = (t_capture, fire_at)
            link.divert(item, 1, fire_at, deadline=t_capture + gate_distance / speed, on_result=res)
            time.sleep(0.03)
        assert res.wait(5)
        assert all(r.acked and r.attempts == 1 for r in res.calls)
        assert wait_for(lambda: len(events(em, "fired")) == 5, 3.0)
    for ev in events(em, "fired"):
        t_capture, fire_at = captured[ev["item_id"]]
        assert ev["fire_at"] == fire_at
        assert 0 <= ev["fired_at"] - fire_at <= 20  # within 20 mm (a loaded 2-core box)
        # fired when the item reached the gate: gate_distance / speed after capture
        assert ev["t_mono"] - t_capture == pytest.approx(gate_distance / speed, abs=0.03)


def test_late_divert_is_naked_and_logged(emulator):
    em = emulator(speed_mps=0.5)
    with open_link(em.port, heartbeat_period_ms=50) as link:
        assert link.wait_ready(5.0)
        res = Results()
        passed = link.position_at(time.monotonic()) - 50
        link.divert(11, 1, passed, deadline=time.monotonic() + 1.0, on_result=res)
        link.divert(12, 9, passed + 500, deadline=time.monotonic() + 1.0, on_result=res)  # no gate 9
        assert res.wait(2)
        late, bad_gate = res.by_item[11], res.by_item[12]
        assert late.late and not late.acked and late.fault is None and "controller" in late.detail
        assert bad_gate.fault == "controller refused: bad_gate"
        assert link.counters["late"] == 1 and link.counters["nak"] == 2
    assert [e["item_id"] for e in events(em, "late")] == [11]
    assert events(em, "fired") == []


def test_faulty_line_loses_no_divert_and_never_fires_twice(emulator):
    """5 % corrupted and 1 % dropped frames, both ways; 300 diverts wrap the sequence number."""
    em = emulator(speed_mps=2.0, faults={"corrupt": 0.05, "drop": 0.01, "seed": 7})
    n = 300
    with open_link(em.port, heartbeat_period_ms=50, ack_timeout_ms=40, retries=3) as link:
        assert link.wait_ready(5.0)
        res = Results()
        for item in range(n):
            t = time.monotonic()
            # 0.5 m ahead at 2 m/s: 250 ms for the ACK, room for retransmissions on a busy machine
            link.divert(item, 1, link.position_at(t) + 500, deadline=t + 0.25, on_result=res)
            time.sleep(0.002)
        assert res.wait(n, timeout=10)
        time.sleep(0.3)
        c = dict(link.counters)
    outcomes = [r.outcome for r in res.calls]
    print(f"\n{n} diverts over a line with 5 % corrupt / 1 % drop: "
          f"acked {outcomes.count('acked')}, late {outcomes.count('late')}, "
          f"fault {outcomes.count('fault')}; counters {c}")
    assert len(res.calls) == n and sorted(res.by_item) == list(range(n))  # exactly one each
    assert c["acked"] + c["late"] + c["faults"] == n
    assert c["crc_errors"] > 0 and c["retransmits"] > 0  # the faults were really there
    assert outcomes.count("acked") >= 0.97 * n
    fired = [e["item_id"] for e in events(em, "fired")]
    assert len(fired) == len(set(fired))  # a retransmitted DIVERT never fires twice
    acked = {r.item_id for r in res.calls if r.acked}
    assert acked <= set(fired)  # everything acknowledged was fired


def test_divert_after_its_deadline_is_late_without_being_sent(emulator):
    em = emulator(speed_mps=0.5, faults={"delay_ms": 80})
    with open_link(em.port, heartbeat_period_ms=50, ack_timeout_ms=200) as link:
        assert link.wait_ready(5.0)
        res = Results()
        t = time.monotonic()
        link.divert(1, 1, link.position_at(t) + 1000, deadline=t - 0.001, on_result=res)
        # the controller answers 80 ms late; the deadline is 30 ms
        link.divert(2, 1, link.position_at(t) + 1000, deadline=t + 0.03, on_result=res)
        assert res.wait(2, timeout=2)
        assert res.by_item[1].late and res.by_item[1].attempts == 0
        assert res.by_item[2].late and "deadline" in res.by_item[2].detail
        assert link.counters["sent"] == 1


def test_failsafe_divert_all_when_host_heartbeats_stop(emulator):
    em = emulator(speed_mps=0.5, failsafe="divert_all", heartbeat_timeout_s=0.3)
    link = open_link(em.port, heartbeat_period_ms=50)
    assert link.wait_ready(5.0)
    time.sleep(0.5)
    assert events(em, "failsafe") == []  # heartbeats every 50 ms keep it quiet
    link.close()  # the host goes silent
    t_closed = time.monotonic()
    assert wait_for(lambda: events(em, "failsafe"), 3.0)
    ev = events(em, "failsafe")[0]
    assert ev["mode"] == "divert_all"
    assert ev["t_mono"] - t_closed == pytest.approx(0.3, abs=0.2)
    with open_link(em.port, heartbeat_period_ms=50) as link2:  # the host comes back
        assert link2.wait_ready(5.0)
        assert wait_for(lambda: events(em, "failsafe_cleared"), 3.0)
        assert link2.controller_state == p.CtrlState.RUNNING


def test_failsafe_stop_belt_freezes_position_during_a_silent_window(emulator):
    # the controller stops hearing the host 0.6 s after start, for 0.8 s
    em = emulator(speed_mps=0.5, failsafe="stop_belt", heartbeat_timeout_s=0.2,
                  faults={"silence_after_s": 0.6, "silence_for_s": 0.8})
    with open_link(em.port, heartbeat_period_ms=40) as link:
        assert link.wait_ready(5.0)
        assert wait_for(lambda: events(em, "failsafe_cleared"), 5.0)
        stop, cleared = events(em, "failsafe")[0], events(em, "failsafe_cleared")[0]
        assert stop["mode"] == "stop_belt"
        assert cleared["position"] == stop["position"]  # the belt did not move
        assert cleared["t_mono"] - stop["t_mono"] > 0.3
        assert wait_for(lambda: link.counters["controller_faults"] >= 1, 2.0)


def test_vanished_port_fails_every_outstanding_divert_with_a_clear_error(emulator):
    em = emulator(speed_mps=0.5)
    link = open_link(em.port, heartbeat_period_ms=50, ack_timeout_ms=100, retries=20)
    try:
        assert link.wait_ready(5.0)
        em.toggle_silence()  # nobody answers: the diverts stay outstanding
        time.sleep(0.1)
        res = Results()
        t = time.monotonic()
        for item in range(5):
            link.divert(item, 1, link.position_at(t) + 5000, deadline=t + 10.0, on_result=res)
        time.sleep(0.15)
        em.kill()  # the controller vanishes (power loss, cable pulled)
        assert res.wait(5, timeout=3)
        assert all(r.fault and r.fault.startswith("port lost") for r in res.calls)
        assert not link.healthy
        assert em.port in link.last_error
        link.divert(99, 1, 10**6, deadline=time.monotonic() + 5, on_result=res)
        assert res.wait(6, timeout=2)
        assert res.by_item[99].fault and em.port in res.by_item[99].fault
        assert sorted(res.by_item) == [0, 1, 2, 3, 4, 99] and len(res.calls) == 6
    finally:
        link.close()


def test_bad_bytes_from_a_fake_controller_are_counted_not_fatal():
    """A pty driven directly by the test: known garbage around known frames."""
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    link = open_link(os.ttyname(slave), heartbeat_period_ms=1000)
    try:
        hb = [p.encode(i, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(100 * i, 0)) for i in range(5)]
        garbage = bytes([p.SOF, 0x05, 0x00, 0xFF, p.SOF]) + b"noise\x00\xa5"
        wrong_size = p.encode(9, p.MsgType.HEARTBEAT, b"\x01\x02")  # valid CRC, bad payload
        os.write(master, garbage + hb[0] + garbage + hb[1] + wrong_size + hb[2] + hb[3][:5])
        time.sleep(0.05)
        os.write(master, hb[3][5:] + garbage + hb[4] + bytes(p.MAX_FRAME))
        assert wait_for(lambda: link.counters["heartbeats_rx"] == 5, 2.0)
        assert link.counters["crc_errors"] + link.counters["resyncs"] > 0
        assert "payload is 2 bytes" in link.last_error
        assert link.wait_ready(0) and link.healthy  # the good frames around the garbage still count
    finally:
        link.close()
        os.close(master)
        os.close(slave)


def test_unopenable_port_names_the_url():
    with pytest.raises(DeviceError, match="/dev/does-not-exist"):
        open_link("/dev/does-not-exist")
    with pytest.raises(DeviceError, match="spawn_emulator"):
        open_link("emulator")


def test_bad_fault_settings_are_refused_before_spawning():
    with pytest.raises(DeviceError, match="corupt"):
        spawn_emulator(faults={"corupt": 0.1})
    with pytest.raises(DeviceError, match="within 0..1"):
        spawn_emulator(faults={"drop": 2})


def test_rig_divert_ping_cli(emulator, capsys):
    from damage_rig.rig.cli import main

    em = emulator(speed_mps=0.5)
    assert main(["divert", "ping", "--url", em.port, "--divert", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["divert"]["outcome"] == "acked" and out["healthy"]


def test_loop_url_without_a_controller_ends_in_a_fault_after_retries():
    # loop:// echoes the host's own frames: nobody ACKs, so the retries run out
    with open_link("loop://", ack_timeout_ms=20, retries=2, heartbeat_period_ms=1000) as link:
        res = Results()
        link.divert(1, 1, 10**6, deadline=time.monotonic() + 5, on_result=res)
        assert res.wait(1, timeout=2)
        r = res.calls[0]
        assert r.fault == "no ACK after 3 attempt(s)" and r.attempts == 3
        assert link.counters["retransmits"] == 2 and not link.healthy
