"""A real Mosquitto broker for the tests, a subscriber that keeps every message, `rig status --json` in-process.

The broker is Debian's ``mosquitto`` (tools/bootstrap.sh's ``test`` action installs it);
``mosquitto_binary()`` is None where it is absent and the tests skip with that reason.
The broker keeps its state on disk (``persistence true``), so a subscriber with a
persistent session (clean_session False) gets what was published while it was
away, across a broker restart, as a site's consumer would.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from damage_rig.rig.cli import main

from .config import demo_config


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """``tls``: (ca, cert, key) paths for a TLS listener; ``users``: {name: password} (no anonymous access)."""

    def __init__(self, workdir: Path, tls: tuple | None = None, users: dict | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 "persistence true", f"persistence_location {self.dir}/", "autosave_interval 1",
                 "max_queued_messages 100000", f"log_dest file {self.dir}/mosquitto.log",
                 # as root mosquitto would switch to the 'mosquitto' user, who cannot write this test's folder
                 f"user {getpass.getuser()}"]
        if tls:
            lines += [f"cafile {tls[0]}", f"certfile {tls[1]}", f"keyfile {tls[2]}"]
        if users:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True, timeout=30)
            pw.chmod(0o600)
            lines.append(f"password_file {pw}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {(self.dir / 'mosquitto.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file and exits
            self.proc.wait(timeout=10)
        self.proc = None


class Subscriber:
    """Every message on ``topic`` with its MQTT dup flag, through a persistent session (QoS 1)."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber"):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool, bool]] = []  # (topic, payload, dup, retain)
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber never subscribed"

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.dup), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, pred, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status_json(state: Path) -> tuple[int, dict]:
    """`rig status --state DIR --json` (in this process: a monitor's poll every 0.5 s must not load the CPUs)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["status", "--state", str(state), "--json"])
    return code, json.loads(buf.getvalue())


def make_tls_certs(d: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 (openssl): (ca.pem, server.pem, server.key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key, crt, key, csr = (d / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "server.csr"))

    def ossl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=test site CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
         "-extfile", ext)
    key.chmod(0o644)  # mosquitto may drop privileges before reading it
    return ca, crt, key


def site_config(tmp_path: Path, model_dir, **sections) -> Path:
    """The demo config on the test model with the given top-level sections, written as tmp_path/rig.yaml."""
    demo_config(tmp_path, model_dir, **sections)
    return tmp_path / "rig.yaml"
