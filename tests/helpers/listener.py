"""A stand-in for systemd's side of sd_notify: a real AF_UNIX datagram socket that records messages.

Used by the notify/watchdog and `rig run` tests and by tests/helpers/faults.py (the
watchdog-restart case plays systemd with it).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    """Binds ``path`` (or an abstract name when ``abstract``), collects each datagram as a dict."""

    def __init__(self, path: str | Path | None = None, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"damage-rig-test-{os.getpid()}-{id(self)}"
            self.sock.bind(b"\0" + name.encode())
            self.env_value = "@" + name
        else:
            self.sock.bind(str(path))
            self.env_value = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict]] = []  # (monotonic time, fields)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.messages.append((time.monotonic(), fields))
                self._cond.notify_all()

    def times(self, key: str, since: float = 0.0) -> list[float]:
        """Arrival times (monotonic) of the messages carrying ``key``, from ``since`` on."""
        with self._cond:
            return [t for t, m in self.messages if key in m and t >= since]

    def wait(self, key: str, since: float = 0.0, timeout: float = 30.0) -> float | None:
        """Arrival time of the first ``key`` message from ``since`` on, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [t for t, m in self.messages if key in m and t >= since]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def with_key(self, key: str) -> list[tuple[float, dict]]:
        with self._cond:
            return [(t, m) for t, m in self.messages if key in m]

    def wait_for(self, key: str, count: int = 1, timeout: float = 10.0) -> list[tuple[float, dict]]:
        """Block until ``count`` messages carrying ``key`` arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [(t, m) for t, m in self.messages if key in m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)}/{count} {key} message(s) in {timeout} s; "
                                       f"got {[m for _, m in self.messages]}")
                self._cond.wait(left)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
