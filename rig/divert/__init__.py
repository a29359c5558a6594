"""The divert link: host <-> gate controller.

- protocol.py: the frame format (docs/serial-protocol.md), pure functions;
- link.py: the host side (reliable DIVERT, heartbeats, belt clock model);
- emulator.py: the controller side, run as its own process on a pty;
- spawn.py: start/stop that process;
- modbus.py: a Modbus RTU coil backend for sites whose gate is a PLC coil.

``open_link(url)`` picks the backend from the URL.
"""

from .link import DivertResult, SerialLink, open_link
from .spawn import EmulatorProcess, spawn_emulator

__all__ = ["DivertResult", "EmulatorProcess", "SerialLink", "open_link", "spawn_emulator"]
