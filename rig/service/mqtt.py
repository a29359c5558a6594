"""Every decision over MQTT (paho-mqtt), from a bounded queue through an on-disk outbox.

Topics (``<prefix>`` is ``mqtt.topic_prefix``, ``<rig>`` the config's ``name``):

* ``<prefix>/<rig>/events``: one JSON object per decision, QoS 1, in decision order
  (id, captured_at, decision, reason, score, type, sku, expected_sku, views, latency_ms,
  model_version, seq; ``redelivered: true`` when a previous run handed it to a broker that
  never acknowledged it).
* ``<prefix>/<rig>/available``: ``online`` / ``offline``, retained; ``offline`` is also the
  last will, so a rig that dies or loses the network reads offline.
* ``<prefix>/<rig>/expected`` (subscribed when ``scan.url`` is ``mqtt``): the WMS's expected
  product per item (rig/scan/mqtt_source.py).

The path of an event, and why a broker never delays a decision::

    decide ──put_nowait──> queue (bounded, in memory) ──outbox thread──> outbox.sqlite (bounded, on disk)
                                                                          │ oldest first, at most WINDOW
                                                                          v unacknowledged at a time
                                                              paho (QoS 1) ──> broker; PUBACK deletes the row

The decision thread only does ``put_nowait``; a full queue (the outbox thread stuck
on a stalled disk) drops the event and counts it (``queue_dropped``). While the broker
is away events wait in the outbox, up to ``outbox_max`` (then the oldest go, counted as
``outbox_dropped``), and are sent in order once it is back. paho re-sends an event
handed over but not acknowledged before a disconnect, with the MQTT DUP flag set: a
subscriber may see such an event twice (QoS 1's contract), marked, and can drop it by
``seq``. Nothing else is ever sent twice while the process lives.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from ..foundation.errors import ConfigError

log = logging.getLogger(__name__)

OUTBOX_NAME = "mqtt-outbox.sqlite"
WINDOW = 64  # events handed to paho and not yet acknowledged


def topics(prefix: str, rig_name: str) -> dict:
    base = f"{prefix.rstrip('/')}/{rig_name}"
    return {"events": f"{base}/events", "available": f"{base}/available", "expected": f"{base}/expected"}


def event_json(item, latency_ms: float, rig_name: str, model_version: str) -> dict:
    """The published form of one decision (also what tests compare with the event log)."""
    s = item.score
    views = {}
    if s is not None:
        views = {v: {"damage_prob": round(float(vs.damage_prob), 4), "anomaly": round(float(vs.anomaly), 4)}
                 for v, vs in s.views.items()}
    scan = getattr(item, "scan", None)
    expected = getattr(s, "expected_sku", "") if s is not None else ""
    if not expected and scan is not None and scan.readable:
        expected = scan.sku
    return {
        "id": item.item_id, "rig": rig_name,
        "captured_at": round(time.time() - (time.monotonic() - item.capture.host_time), 3),
        "decision": item.decision, "reason": item.reason,
        "score": None if s is None else round(float(s.score), 5),
        "type": getattr(s, "type", "") or "", "sku": getattr(s, "sku_pred", "") or "",
        "expected_sku": expected or None, "views": views,
        "latency_ms": round(float(latency_ms), 2), "model_version": model_version,
    }


class Outbox:
    """Events waiting for the broker, in order, on disk (survives a restart). One thread uses it."""

    def __init__(self, path: Path, max_rows: int):
        self.path, self.max_rows = Path(path), int(max_rows)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                          "topic TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)")
        self.depth = self.conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self.dropped = 0

    def add(self, rows: list[tuple[str, str]]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", rows)
        self.depth += len(rows)
        over = self.depth - self.max_rows
        if over > 0:
            with self.conn:
                self.conn.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                  (over,))
            self.depth -= over
            self.dropped += over
            log.error("MQTT outbox full (%d events): dropped the %d oldest", self.max_rows, over)

    def after(self, seq: int, limit: int) -> list[tuple[int, str, str, int]]:
        return self.conn.execute("SELECT seq, topic, payload, attempts FROM outbox WHERE seq > ? ORDER BY seq "
                                 "LIMIT ?", (seq, limit)).fetchall()

    def handed(self, seqs: list[int]) -> None:
        self.conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs])

    def delete(self, seqs: list[int]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        self.depth -= cur.rowcount if cur.rowcount >= 0 else len(seqs)

    def close(self) -> None:
        self.conn.close()


class MqttPublisher:
    """A decision sink (``rig.sinks``) publishing every decision; the MQTT client of the rig."""

    def __init__(self, cfg, rig_name: str, state_dir: Path, model_version: str = "", on_expected=None):
        self.cfg, self.rig_name, self.model_version = cfg, rig_name, model_version
        u = urlsplit(cfg.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ConfigError(f"mqtt.url {cfg.url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        self.host, self.port = u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883)
        self.topics = topics(cfg.topic_prefix, rig_name)
        self.on_expected = on_expected
        self.counters = {"queued": 0, "queue_dropped": 0, "published": 0, "acked": 0, "redelivered": 0,
                         "connects": 0, "disconnects": 0, "expected_received": 0, "expected_bad": 0}
        self.connected = False
        self._q: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self._acked: deque[int] = deque()
        self._mid_seq: dict[int, int] = {}  # the outbox thread's only
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.outbox = Outbox(Path(state_dir) / OUTBOX_NAME, cfg.outbox_max)
        client_id = cfg.client_id or f"damage-rig-{rig_name}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        user = os.environ.get(cfg.username_env)
        if user:
            self.client.username_pw_set(user, os.environ.get(cfg.password_env))
        if u.scheme == "mqtts":
            self.client.tls_set(ca_certs=cfg.ca_file)
        self.client.will_set(self.topics["available"], "offline", qos=1, retain=True)
        self.client.max_inflight_messages_set(WINDOW)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> MqttPublisher:
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()  # paho's network thread connects and reconnects
        self._thread.start()
        log.info("MQTT: publishing to %s:%d %s (%d events waiting in the outbox)", self.host, self.port,
                 self.topics["events"], self.outbox.depth)
        return self

    def close(self, drain_s: float = 3.0) -> None:
        """Move what is queued to the outbox, give the broker ``drain_s`` to take it, then say offline."""
        t_end = time.monotonic() + drain_s
        while time.monotonic() < t_end and (not self._q.empty() or (self.connected and self.outbox.depth)):
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        if self.connected:
            info = self.client.publish(self.topics["available"], "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=1.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        if self.outbox.depth:
            log.warning("MQTT: %d events stay in the outbox for the next start", self.outbox.depth)
        self.outbox.close()

    # ---- the decision sink (decision thread: never blocks) ---------------------
    def decision(self, item, latency_ms: float) -> None:
        payload = json.dumps(event_json(item, latency_ms, self.rig_name, self.model_version))
        try:
            self._q.put_nowait(payload)
            self.counters["queued"] += 1
            self._wake.set()
        except queue.Full:
            self.counters["queue_dropped"] += 1
            log.error("MQTT queue full: event %s not published (is the state directory's disk stalled?)",
                      item.item_id)

    def divert_result(self, item, res) -> None:
        pass

    def stats(self) -> dict:
        return dict(self.counters, connected=self.connected, outbox_depth=self.outbox.depth,
                    outbox_dropped=self.outbox.dropped, queue_depth=self._q.qsize())

    # ---- paho callbacks (paho's network thread) ---------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("MQTT: broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        self.connected = True
        self.counters["connects"] += 1
        log.warning("MQTT: connected to %s:%d", self.host, self.port) if self.counters["connects"] > 1 else \
            log.info("MQTT: connected to %s:%d", self.host, self.port)
        client.publish(self.topics["available"], "online", qos=1, retain=True)
        if self.on_expected is not None:
            client.subscribe(self.topics["expected"], qos=1)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self.connected:
            log.warning("MQTT: lost the broker %s:%d (%s); events wait in the outbox", self.host, self.port,
                        reason_code)
            self.counters["disconnects"] += 1
        self.connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # paho calls this holding its own message lock: only note the mid, the outbox thread maps it
        self._acked.append(mid)
        self._wake.set()

    def _on_message(self, client, userdata, msg):
        self.counters["expected_received"] += 1
        try:
            self.on_expected(msg.payload)
        except ValueError as exc:
            self.counters["expected_bad"] += 1
            log.warning("MQTT: bad message on %s: %s", msg.topic, exc)

    # ---- the outbox thread ---------------------------------------------------------
    def _run(self) -> None:
        last_handed = 0  # the highest seq handed to paho in this process
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            try:
                self._pump_queue()
                acked = []
                while self._acked:
                    seq = self._mid_seq.pop(self._acked.popleft(), None)
                    if seq is not None:  # None: the 'available' message
                        acked.append(seq)
                if acked:
                    self.outbox.delete(acked)
                    self.counters["acked"] += len(acked)
                if self.connected:
                    last_handed = self._hand_over(last_handed)
            except sqlite3.Error as exc:  # a full or broken disk: keep trying, the decisions go on
                log.error("MQTT outbox %s: %s", self.outbox.path, exc)
                self._stop.wait(1.0)
        self._pump_queue()

    def _pump_queue(self) -> None:
        rows = []
        while len(rows) < 1000:
            try:
                rows.append((self.topics["events"], self._q.get_nowait()))
            except queue.Empty:
                break
        if rows:
            self.outbox.add(rows)

    def _hand_over(self, last_handed: int) -> int:
        room = WINDOW - len(self._mid_seq)
        if room <= 0:
            return last_handed
        rows = self.outbox.after(last_handed, room)
        handed = []
        for seq, topic, payload, attempts in rows:
            if attempts:  # handed to a broker by an earlier run, never acknowledged
                payload = json.dumps(dict(json.loads(payload), redelivered=True))
                self.counters["redelivered"] += 1
            body = json.loads(payload)
            body["seq"] = seq
            info = self.client.publish(topic, json.dumps(body), qos=1)
            self._mid_seq[info.mid] = seq
            handed.append(seq)
            last_handed = seq
        if handed:
            self.outbox.handed(handed)
            self.counters["published"] += len(handed)
        return last_handed
