"""sd_notify over $NOTIFY_SOCKET, written here so the rig needs no libsystemd binding.

systemd hands a Type=notify service the path of an AF_UNIX datagram socket in
``NOTIFY_SOCKET`` (a leading '@' means an abstract socket name). Each message
is newline-separated ``KEY=VALUE`` lines. Without the variable (run from a
terminal, in tests) every call is a no-op, so the runtime calls it
unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def socket_address(path: str) -> str | bytes:
    """The address to send to: '@name' is the abstract name '\\0name'."""
    if path.startswith("@"):
        return b"\0" + path[1:].encode()
    return path


class Notifier:
    """One connection to the service manager; sends never raise (a lost message must not stop the belt)."""

    def __init__(self, path: str | None = None):
        self.path = os.environ.get("NOTIFY_SOCKET") if path is None else path
        self._sock = None
        if self.path:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields) -> bool:
        """Send KEY=VALUE lines (keys in upper case); True when the datagram went out."""
        if self._sock is None:
            return False
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        try:
            self._sock.sendto(msg.encode(), socket_address(self.path))
            return True
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.path, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text.replace("\n", " "))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self.send(STOPPING=1, **({"STATUS": status} if status else {}))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_timeout_s(env: dict | None = None) -> float | None:
    """WatchdogSec as systemd passed it (WATCHDOG_USEC), or None when no watchdog is armed for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. our parent)
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    return value / 1e6 if value > 0 else None


_default: Notifier | None = None


def default() -> Notifier:
    """The process-wide notifier built from the environment at first use."""
    global _default
    if _default is None:
        _default = Notifier()
    return _default


def ready(status: str | None = None) -> bool:
    return default().ready(status)


def status(text: str) -> bool:
    return default().status(text)


def watchdog() -> bool:
    return default().watchdog()


def stopping(status: str | None = None) -> bool:
    return default().stopping(status)
