"""The divert link: host <-> gate controller.

- protocol.py: the frame format (docs/serial-protocol.md), pure functions;
- base.py: the result of a divert, the link protocol, the backend registry and ``open_link(url)``;
- link.py: the serial backend (reliable DIVERT, heartbeats, belt clock model);
- modbus.py: a Modbus RTU coil backend for sites whose gate is a PLC coil;
- emulator.py: the controller side, run as its own process on a pty;
- spawn.py: start/stop that process; soak.py: a fault-injection soak of the link.
"""
