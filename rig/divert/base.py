"""What every divert link backend shares: the result of one divert, the link protocol, the registry.

A backend is one file registering a factory in ``LINKS`` under its URL scheme
(``modbus-rtu`` in modbus.py); ``serial`` (link.py) takes every other URL, the
way pyserial's ``serial_for_url`` does. ``open_link(url)`` picks the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..foundation.errors import DeviceError
from ..foundation.registry import Registry

LINKS = Registry("divert link", "damage_rig.rig.divert")
DEFAULT_SCHEME = "serial"


@dataclass(frozen=True)
class DivertResult:
    """How one divert ended. Exactly one of: acked, late, fault is not None."""

    item_id: int
    acked: bool
    late: bool
    fault: str | None
    attempts: int
    sent_at: float  # host monotonic time of the first transmission (or of the call)
    done_at: float  # host monotonic time the outcome was known
    gate_id: int = 0
    fire_at: int = 0
    detail: str = ""

    @property
    def outcome(self) -> str:
        return "acked" if self.acked else "late" if self.late else "fault"


class DivertLink(Protocol):
    """The host side of the link to the gate controller, as the rig uses it."""

    healthy: bool
    last_error: str | None

    def wait_ready(self, timeout_s: float) -> bool: ...

    def position_at(self, host_time: float) -> int: ...

    def divert(self, item_id: int, gate_id: int, fire_at: int, deadline: float,
               on_result: Callable[[DivertResult], None]) -> None: ...

    def close(self) -> None: ...


def open_link(url: str, *, baud: int = 115200, ack_timeout_ms: float = 40.0, retries: int = 3,
              heartbeat_period_ms: float = 200.0, counts_per_m: float = 1000.0,
              speed_mps: float | None = None) -> DivertLink:
    """Open the divert link named by ``url``: the backend registered for its scheme, else serial.

    ``modbus-rtu://PORT?...`` gives the Modbus RTU coil backend (see
    damage_rig.rig.divert.modbus); anything else goes to serial_for_url.
    'emulator' is not a port: start one with spawn_emulator() and pass its ``port``.
    """
    if url == "emulator":
        raise DeviceError("divert.url 'emulator' is not a port: start the emulator with "
                          "spawn_emulator() and open its .port")
    scheme = url.split(":", 1)[0] if ":" in url else ""
    make = LINKS.get(scheme if scheme and scheme in LINKS.names() else DEFAULT_SCHEME)
    return make(url, baud=baud, ack_timeout_ms=ack_timeout_ms, retries=retries,
                heartbeat_period_ms=heartbeat_period_ms, counts_per_m=counts_per_m, speed_mps=speed_mps)
