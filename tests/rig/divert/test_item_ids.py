"""Issue 13 defect 2: item ids repeat. Ids (rig/item_ids.py) and the serial line (protocol v2, a
long-lived controller emulator in its own process)."""

from __future__ import annotations

import time

import pytest
from damage_rig.rig.divert import protocol as p
from damage_rig.rig.divert.base import open_link
from damage_rig.rig.divert.spawn import spawn_emulator
from damage_rig.rig.foundation.item_ids import COUNTER_BITS, ItemIds

from tests.rig.divert.test_divert_link import Results, events, wait_for

DAY_WRAP_S = 65_536  # the old id's time field wrapped every 65,536 s (18.2 h)


def old_scheme(t: float, n: int) -> int:
    """The id the runtime used to send: (time & 0xFFFF) << 16 plus the item number, as u32."""
    return (((int(t) & 0xFFFF) << 16) + n) & 0xFFFFFFFF


def test_old_scheme_repeats_and_the_new_one_does_not():
    t0 = 1_790_000_000.0
    assert old_scheme(t0, 5) == old_scheme(t0 + DAY_WRAP_S, 5)  # the defect, for the record
    a = ItemIds(clock=lambda: t0)
    b = ItemIds(clock=lambda: t0 + DAY_WRAP_S)  # a restart 18.2 h later
    ids_a = [a.next() for _ in range(1000)]
    ids_b = [b.next() for _ in range(1000)]
    assert not set(ids_a) & set(ids_b)
    assert max(ids_b) < 2**64


def test_a_run_longer_than_65536_items_never_reuses_an_id():
    t = [1_790_000_000.0]
    ids = ItemIds(clock=lambda: t[0])  # a frozen clock: the worst case for a time-based id
    seen = [ids.next() for _ in range(70_000)]
    assert len(set(seen)) == len(seen) and seen == sorted(seen)
    t[0] += 0.001  # time moves on: ids stay above what was issued in the burst
    assert ids.next() > seen[-1]
    assert old_scheme(t[0], 65_536) == old_scheme(t[0] + 1, 0)  # the old id spilled into the next second's


def test_clock_set_back_between_runs_does_not_repeat_ids(tmp_path):
    t0 = 1_790_000_000.0
    first = ItemIds(tmp_path, clock=lambda: t0)
    last = max(first.next() for _ in range(100))
    again = ItemIds(tmp_path, clock=lambda: t0 - 3600)  # the RTC lost an hour
    assert again.next() > last


def test_high_water_file_unwritable_costs_no_id(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    ids = ItemIds(blocker)  # the mark cannot be written (its folder is a file): ids still come
    got = [ids.next() for _ in range(10)]
    assert len(set(got)) == 10 and ids.hwm_errors >= 1
    assert (got[0] >> COUNTER_BITS) / 1000 == pytest.approx(time.time(), abs=5)


@pytest.fixture
def emulator(tmp_path):
    em = spawn_emulator(speed_mps=1.0, counts_per_m=1000.0, log_path=tmp_path / "gate.jsonl",
                        heartbeat_timeout_s=30.0)
    yield em
    em.stop()


def _divert(link, res, item_id, ahead_counts=150):
    now = time.monotonic()
    link.divert(item_id, 1, link.position_at(now) + ahead_counts, deadline=now + ahead_counts / 1000.0,
                on_result=res)


def test_long_lived_controller_fires_a_reused_id_after_its_fire_position_passed(emulator):
    """Before: the controller kept (item, gate) forever and ACKed a later divert with the same id
    without firing it. Now it forgets the id once it fired."""
    with open_link(emulator.port, heartbeat_period_ms=50, counts_per_m=1000.0) as link:
        assert link.wait_ready(5.0) and wait_for(lambda: link.speed_mps is not None)
        res = Results()
        _divert(link, res, 7)
        assert res.wait(1) and res.calls[0].acked
        assert wait_for(lambda: len(events(emulator, "fired")) == 1, 3.0)
        _divert(link, res, 7)  # the same id again, after it fired
        assert res.wait(2) and res.calls[1].acked
        assert wait_for(lambda: len(events(emulator, "fired")) == 2, 3.0), events(emulator, "fired")


def test_restart_18h_later_against_a_long_lived_controller_every_divert_fires(emulator):
    """Two host runs 65,536 s apart (ids from the run's clock) against one controller: every
    acknowledged divert fires; u64 ids travel in protocol v2 and come back in the ACK."""
    t0 = time.time()
    runs = [ItemIds(clock=lambda: t0), ItemIds(clock=lambda: t0 + DAY_WRAP_S)]
    with open_link(emulator.port, heartbeat_period_ms=50, counts_per_m=1000.0) as link:
        assert link.wait_ready(5.0) and wait_for(lambda: link.speed_mps is not None)
        res = Results()
        sent = []
        for ids in runs:
            for _ in range(3):
                sent.append(ids.next())
                _divert(link, res, sent[-1], ahead_counts=400)
                time.sleep(0.02)
        assert res.wait(len(sent), 5)
        assert all(r.acked for r in res.calls) and {r.item_id for r in res.calls} == set(sent)
        assert wait_for(lambda: len(events(emulator, "fired")) == len(sent), 5.0)
    assert {e["item_id"] for e in events(emulator, "fired")} == set(sent)
    assert max(sent) > 2**32  # does not fit the old u32 field


def test_nak_with_item_id_zero_does_not_fail_the_pending_divert():
    """Over a pty: a controller answers a DIVERT's SEQ with NAK(bad payload, item id 0) and then ACKs
    it. Before, any NAK with id 0 failed whatever divert held that SEQ; now only an answer naming the
    item does."""
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    dec = p.Decoder()
    with open_link(os.ttyname(slave), heartbeat_period_ms=50, counts_per_m=1000.0, ack_timeout_ms=400,
                   retries=0) as link:
        os.write(master, p.encode(0, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(0, 0)))
        os.write(master, p.encode(1, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(10, 0)))
        assert link.wait_ready(5.0)
        res = Results()
        item = (1 << 60) + 7
        link.divert(item, 1, 10_000, deadline=time.monotonic() + 5, on_result=res)
        divert = None
        end = time.monotonic() + 5
        while divert is None and time.monotonic() < end:
            for f in dec.feed(os.read(master, 4096)):
                if f.type == p.MsgType.DIVERT:
                    divert = f
        assert divert is not None and p.parse_divert(divert.payload)[0] == item  # u64 on the wire
        os.write(master, p.encode(2, p.MsgType.NAK, p.nak_payload(divert.seq, p.NakReason.BAD_PAYLOAD, 0)))
        time.sleep(0.1)
        assert not res.calls and link.counters["nak_unmatched"] == 1
        os.write(master, p.encode(3, p.MsgType.ACK, p.ack_payload(divert.seq, item)))
        assert res.wait(1) and res.calls[0].acked
    os.close(master)
    os.close(slave)


def test_fire_at_beyond_i64_is_a_fault_result_not_an_exception(emulator):
    with open_link(emulator.port, heartbeat_period_ms=50, counts_per_m=1000.0) as link:
        assert link.wait_ready(5.0)
        res = Results()
        link.divert(1, 1, 2**63, deadline=time.monotonic() + 1, on_result=res)
        assert res.wait(1) and res.calls[0].fault and "i64" in res.calls[0].fault
