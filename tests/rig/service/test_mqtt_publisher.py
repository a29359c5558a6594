"""The MQTT client against a real Mosquitto broker, without a rig: a dead broker never delays a decision,
the outbox drains in order once the broker comes, and the WMS's expected products arrive on their topic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from functools import partial
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from damage_rig.rig.config import MqttConfig
from damage_rig.rig.scan import ExpectedProducts
from damage_rig.rig.scan.mqtt_source import expected_from_json
from damage_rig.rig.service.mqtt import MqttPublisher

from tests.helpers.faults import wait_until
from tests.helpers.site import Mosquitto, Subscriber, make_tls_certs, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="Debian's mosquitto is not installed "
                                "(tools/bootstrap.sh test installs it)")


def item(n: int):
    return SimpleNamespace(item_id=f"it{n:06d}", decision="pass", reason="score", score=None, scan=None,
                           capture=SimpleNamespace(host_time=time.monotonic()))




def test_a_dead_broker_never_delays_a_decision_and_the_outbox_drains_in_order(tmp_path):
    broker = Mosquitto(tmp_path / "broker")  # not started yet: nothing listens on its port
    pub = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}"), "demo", tmp_path).start()
    try:
        worst = 0.0
        for n in range(200):
            t0 = time.perf_counter()
            pub.decision(item(n), 100.0)
            worst = max(worst, time.perf_counter() - t0)
        assert worst < 0.01, f"a decision waited {worst * 1000:.1f} ms for the MQTT client"
        assert wait_until(lambda: pub.stats()["outbox_depth"] == 200, 10)  # on disk, waiting
        assert not pub.stats()["connected"]
        broker.start()
        sub = Subscriber(broker.port, "damage-rig/demo/events")
        assert wait_until(lambda: pub.stats()["outbox_depth"] == 0, 30)  # paho reconnects within 1-5 s
        assert sub.wait_for(lambda ms: len(ms) >= 200, 20)
        ids = [json.loads(p)["id"] for _, p, _, _ in sub.messages]
        assert ids == [f"it{n:06d}" for n in range(200)]
        sub.close()
    finally:
        pub.close()
        broker.stop()


def test_expected_products_from_the_wms_topic(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    exp = ExpectedProducts(distance_m=1.0, speed_mps=0.5, match_window_m=0.2)
    pub = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}"), "demo", tmp_path,
                        on_expected=partial(expected_from_json, expected=exp)).start()
    wms = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wms")
    try:
        assert wait_until(lambda: pub.stats()["connected"], 10)
        time.sleep(0.3)  # the subscription is on its way with the CONNACK
        wms.connect("127.0.0.1", broker.port)
        wms.loop_start()
        for body in ({"sku": "sku003-box", "timestamp": time.time()}, {"sku": None}, "not json"):
            payload = body if isinstance(body, str) else json.dumps(body)
            wms.publish("damage-rig/demo/expected", payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: pub.stats()["expected_received"] == 3, 10)
        assert [s.sku for s in exp._scans] == ["sku003-box", None]
        assert pub.stats()["expected_bad"] == 1
    finally:
        wms.loop_stop()
        pub.close()
        broker.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_mqtts_with_a_private_ca_and_credentials_from_the_environment(tmp_path, monkeypatch):
    ca, crt, key = make_tls_certs(tmp_path / "tls")
    broker = Mosquitto(tmp_path / "broker", tls=(ca, crt, key), users={"rig7": "s3cret"}).start()
    cfg = MqttConfig(url=f"mqtts://127.0.0.1:{broker.port}", ca_file=str(ca))
    try:
        monkeypatch.setenv("RIG_MQTT_USERNAME", "rig7")
        monkeypatch.setenv("RIG_MQTT_PASSWORD", "wrong")
        (tmp_path / "a").mkdir()
        pub = MqttPublisher(cfg, "demo", tmp_path / "a").start()
        pub.decision(item(1), 50.0)
        time.sleep(2.0)
        assert not pub.stats()["connected"] and pub.stats()["outbox_depth"] == 1  # refused: kept, not lost
        pub.close(drain_s=0)
        monkeypatch.setenv("RIG_MQTT_PASSWORD", "s3cret")
        pub = MqttPublisher(cfg, "demo", tmp_path / "a").start()  # the same outbox: the event is still there
        assert wait_until(lambda: pub.stats()["connected"], 10)
        pub.decision(item(2), 50.0)
        assert wait_until(lambda: pub.stats()["outbox_depth"] == 0 and pub.stats()["acked"] == 2, 10)
        pub.close()
    finally:
        broker.stop()


def test_the_last_will_says_offline_when_the_rig_dies(tmp_path):
    """A rig killed without a goodbye: the broker publishes its will, `available` reads offline (retained)."""
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port, "damage-rig/demo/available")
    code = ("import os, sys, time\n"
            "from damage_rig.rig.config import MqttConfig\n"
            "from damage_rig.rig.service.mqtt import MqttPublisher\n"
            f"pub = MqttPublisher(MqttConfig(url='mqtt://127.0.0.1:{broker.port}'), 'demo', sys.argv[1]).start()\n"
            "t = time.monotonic()\n"
            "while not pub.stats()['connected'] and time.monotonic() - t < 10: time.sleep(0.05)\n"
            "time.sleep(0.5)\n"
            "os._exit(9)  # dies: no offline message, no DISCONNECT\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60, check=False)
        assert proc.returncode == 9
        assert sub.wait_for(lambda ms: [m[1] for m in ms] == [b"online", b"offline"], 10), sub.messages
        sub.close()
        late = Subscriber(broker.port, "damage-rig/demo/available", client_id="late-comer")
        assert late.wait_for(lambda ms: ms and ms[-1][1] == b"offline" and ms[-1][3], 10)  # retained
        late.close()
    finally:
        broker.stop()
