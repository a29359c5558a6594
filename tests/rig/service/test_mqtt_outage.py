"""MQTT against a real Mosquitto broker: a 5 s broker outage mid-run loses nothing; the outbox is bounded and ordered.

Skipped with the reason where Debian's mosquitto is absent (tools/bootstrap.sh test installs it).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest
from damage_rig.rig.service.mqtt import Outbox

from tests.helpers.site import Mosquitto, Subscriber, mosquitto_binary, site_config, status_json

needs_broker = pytest.mark.skipif(mosquitto_binary() is None, reason="Debian's mosquitto is not installed "
                                  "(tools/bootstrap.sh test installs it)")
ITEMS = 16


@needs_broker
@pytest.mark.slow
def test_broker_outage_mid_run_loses_nothing(tmp_path, model_dir):
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "damage-rig/demo/events")
    config = site_config(tmp_path, model_dir, mqtt={"url": f"mqtt://127.0.0.1:{broker.port}"})
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "damage_rig.rig.cli", "run", "--config", str(config),
                             "--sim-items", str(ITEMS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outage = []
    try:
        assert sub.wait_for(lambda ms: len(ms) >= 3, timeout=120), "no event before the outage"
        broker.stop()
        t_stop = time.monotonic()
        while time.monotonic() - t_stop < 5.0:  # the broker is away for 5 s; the rig goes on deciding
            outage.append(status_json(state))
            time.sleep(0.5)
        broker.start()
        assert proc.wait(timeout=180) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
        broker.stop()
    conn = sqlite3.connect(str(state / "events.db"))
    ids = [r[0] for r in conn.execute("SELECT id FROM items ORDER BY rowid")]
    conn.close()
    broker.start()  # the subscriber's persistent session holds whatever the broker had not delivered
    sub.wait_for(lambda ms: len({json.loads(m[1])["id"] for m in ms}) >= len(ids), timeout=30)
    sub.close()
    broker.stop()
    events = [(json.loads(p), dup) for _, p, dup, _ in sub.messages]
    got = [e["id"] for e, _ in events]
    assert len(ids) >= ITEMS - 1, out
    assert sorted(set(got)) == sorted(ids), f"lost: {sorted(set(ids) - set(got))}"
    firsts = [e["seq"] for e, dup in events if not dup]
    assert firsts == sorted(firsts)  # in decision order
    dupes = [e["id"] for e, dup in events if dup]
    extra = len(got) - len(set(got))
    assert extra <= len(dupes), (extra, dupes)  # every repeat is marked (MQTT DUP), so countable
    print(f"{len(ids)} decisions, {len(got)} messages, {len(dupes)} marked DUP, {extra} repeats")
    # while the broker was away: degraded, events waiting in the outbox, decisions going on
    codes = [c for c, _ in outage]
    away = [j for c, j in outage if c == 1 and any("MQTT broker unreachable" in p for p in j["problems"])]
    assert away, codes
    assert max(j["mqtt"]["outbox_depth"] for j in away) >= 1
    assert max(j["decisions"] for j in away) > min(j["decisions"] for j in away)  # decisions never waited


def test_outbox_is_ordered_bounded_and_survives_reopening(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", max_rows=100)
    box.add([("t", json.dumps({"n": i})) for i in range(150)])
    assert box.depth == 100 and box.dropped == 50  # the oldest went
    rows = box.after(0, 10)
    assert [json.loads(r[2])["n"] for r in rows] == list(range(50, 60))
    box.handed([r[0] for r in rows[:3]])
    box.delete([r[0] for r in rows[:2]])
    box.close()
    box = Outbox(tmp_path / "o.sqlite", max_rows=100)
    assert box.depth == 98
    first = box.after(0, 1)[0]
    assert json.loads(first[2])["n"] == 52 and first[3] == 1  # handed once before: republished as redelivered
    box.close()
