"""Controller emulator: the gate controller's side of the divert link, over a real pty.

It runs as its own process (``rig divert emulate``) so the host talks to it
exactly as it would talk to a USB/RS-485 controller: through a serial port
path. It creates the pty itself (os.openpty), puts the slave side in raw mode,
and publishes the slave path (stdout line ``PORT <path>``, ``--port-file``,
and an optional symlink ``--port``).

What it emulates:
- the belt position in encoder counts: it advances at speed_mps * counts_per_m
  per second of time.monotonic() and freezes while the belt is stopped by the
  fail-safe;
- DIVERT handling: ACK and fire the gate when the position reaches fire_at, or
  NAK(late) when fire_at has already passed; a retransmitted DIVERT (same item
  and gate) is ACKed again and never fires twice;
- HEARTBEAT with the belt position every ``heartbeat_s``; STATUS on request and
  on every state change; FAULT when the fail-safe engages or clears;
- the fail-safe: once the host has been heard, host heartbeats missing for
  ``heartbeat_timeout_s`` engage ``divert_all`` (the gate diverts every item) or
  ``stop_belt`` (the belt stops); it clears when host heartbeats come back;
- fault injection: drop (each frame, either direction), corrupt (one bit
  flipped in an outgoing frame; an incoming frame rejected as a CRC failure),
  delay (every outgoing frame held back), silence (neither read nor answer:
  a window in time, or toggled by SIGUSR1).

Every gate event goes to a JSON-lines log (one flushed line per event), which
is the ground truth the demo counts from.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import random
import select
import signal
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from ..foundation.errors import DeviceError, ProtocolError
from . import protocol as p

log = logging.getLogger(__name__)

FAILSAFE_MODES = ("divert_all", "stop_belt")


@dataclass
class Faults:
    """Fault injection settings; probabilities are per frame."""

    drop: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0
    silence_after_s: float | None = None  # silence starts this long after start ...
    silence_for_s: float | None = None    # ... and lasts this long (None: forever)
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> Faults:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise DeviceError(f"unknown emulator fault setting(s) {sorted(unknown)}; "
                              f"known: {sorted(cls.__dataclass_fields__)}")
        f = cls(**d)
        for name in ("drop", "corrupt"):
            v = getattr(f, name)
            if not 0.0 <= v <= 1.0:
                raise DeviceError(f"fault probability {name}={v} must be within 0..1")
        if f.delay_ms < 0:
            raise DeviceError(f"fault delay_ms={f.delay_ms} must be >= 0")
        return f


@dataclass
class _Counters:
    rx_frames: int = 0
    tx_frames: int = 0
    crc_errors: int = 0
    dropped_rx: int = 0
    dropped_tx: int = 0
    corrupted_tx: int = 0
    corrupted_rx: int = 0
    tx_overflow: int = 0
    acks: int = 0
    naks: int = 0
    fired: int = 0
    late: int = 0
    duplicates: int = 0
    log_errors: int = 0
    host_heartbeats: int = 0


#: diverts the controller holds at once (a real controller's table is bounded too)
MAX_SCHEDULED = 4096
#: frames waiting to go out (only the delay fault holds any)
MAX_OUTBOX = 4096


@dataclass(order=True)
class _Scheduled:
    fire_at: int
    item_id: int = field(compare=False)
    gate_id: int = field(compare=False)


class ControllerEmulator:
    """The controller's state machine; ``serve()`` runs it on the pty until stopped."""

    def __init__(self, *, speed_mps: float = 0.5, counts_per_m: float = 1000.0,
                 gates: tuple[int, ...] = (1,), failsafe: str = "divert_all",
                 heartbeat_s: float = 0.1, heartbeat_timeout_s: float = 1.0,
                 faults: Faults | None = None, log_path: str | Path | None = None):
        if failsafe not in FAILSAFE_MODES:
            raise DeviceError(f"fail-safe {failsafe!r} unknown; choose one of {list(FAILSAFE_MODES)}")
        if speed_mps < 0 or counts_per_m <= 0:
            raise DeviceError(f"belt speed {speed_mps} m/s and {counts_per_m} counts/m must be "
                              "non-negative and positive")
        self.rate = speed_mps * counts_per_m  # counts per second while running
        self.gates = set(gates)
        self.failsafe = failsafe
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self.counters = _Counters()
        self.state = p.CtrlState.RUNNING
        self._t0 = time.monotonic()
        self._base_t = self._t0
        self._base_pos = 0
        self._schedule: list[_Scheduled] = []
        self._known: dict[tuple[int, int], int] = {}  # (item, gate) -> fire_at; ACKed once
        self._last_host_rx: float | None = None
        self._seq = 0
        self._outbox: list[tuple[float, int, bytes]] = []  # (send_at, order, frame)
        self._order = 0
        self._decoder = p.Decoder()
        self._silence_toggled = False
        self._stop = False
        self._log = None
        if log_path:
            try:
                self._log = open(log_path, "a", buffering=1)  # noqa: SIM115
            except OSError as exc:  # a read-only or full disk: the controller runs without its log
                log.error("gate log %s cannot be opened (%s); running without it", log_path, exc)
        self._fd: int | None = None

    # --- belt model ---------------------------------------------------------
    def position(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        if self.state == p.CtrlState.FAILSAFE_STOPPED:
            return self._base_pos
        return self._base_pos + int((now - self._base_t) * self.rate)

    def _rebase(self, now: float) -> None:
        self._base_pos = self.position(now)
        self._base_t = now

    def _time_of(self, position: int) -> float:
        """Monotonic time at which the running belt reaches ``position``."""
        if self.rate <= 0 or self.state == p.CtrlState.FAILSAFE_STOPPED:
            return float("inf")
        return self._base_t + (position - self._base_pos) / self.rate

    # --- events -------------------------------------------------------------
    def _event(self, kind: str, **fields) -> None:
        rec = {"event": kind, **fields, "t_mono": time.monotonic(), "t_wall": time.time()}
        if self._log:
            try:
                self._log.write(json.dumps(rec) + "\n")
            except OSError as exc:  # a full disk must not stop the controller: it goes on firing
                self.counters.log_errors += 1
                if self.counters.log_errors == 1:
                    log.error("gate log %s not written: %s", self._log.name, exc)
        log.debug("%s", rec)

    def _send(self, msg_type: int, payload: bytes = b"", now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        frame = p.encode(self._seq, msg_type, payload)
        self._seq = (self._seq + 1) & 0xFF
        if self.rng.random() < self.faults.drop:
            self.counters.dropped_tx += 1
            return
        if self.rng.random() < self.faults.corrupt:
            buf = bytearray(frame)
            bit = self.rng.randrange(len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
            frame = bytes(buf)
            self.counters.corrupted_tx += 1
        self._order += 1
        if len(self._outbox) >= MAX_OUTBOX:  # a delayed line cannot hold more than a UART buffer
            self.counters.tx_overflow += 1
            return
        heapq.heappush(self._outbox, (now + self.faults.delay_ms / 1000.0, self._order, frame))

    def _flush_outbox(self, now: float) -> None:
        while self._outbox and self._outbox[0][0] <= now:
            _, _, frame = heapq.heappop(self._outbox)
            try:
                os.write(self._fd, frame)
                self.counters.tx_frames += 1
            except BlockingIOError:
                # nobody reads the slave side and the pty buffer is full: a real
                # UART would lose these bytes too
                self.counters.tx_overflow += 1

    def silenced(self, now: float) -> bool:
        f = self.faults
        in_window = False
        if f.silence_after_s is not None:
            start = self._t0 + f.silence_after_s
            end = float("inf") if f.silence_for_s is None else start + f.silence_for_s
            in_window = start <= now < end
        return in_window != self._silence_toggled

    def toggle_silence(self, *_args) -> None:
        self._silence_toggled = not self._silence_toggled

    def request_stop(self, *_args) -> None:
        self._stop = True

    def _status(self, now: float) -> None:
        self._send(p.MsgType.STATUS, p.status_payload(
            self.position(now), int(self.state), self.counters.fired, self.counters.late,
            self.counters.crc_errors, len(self._schedule)), now)

    def handle(self, frame: p.Frame, now: float) -> None:
        """React to one valid frame from the host."""
        c = self.counters
        c.rx_frames += 1
        self._last_host_rx = now
        if frame.type == p.MsgType.HEARTBEAT:
            c.host_heartbeats += 1
            if self.state != p.CtrlState.RUNNING:
                self._clear_failsafe(now)
        elif frame.type == p.MsgType.DIVERT:
            try:
                version = p.divert_version(frame.payload)
                item_id, gate_id, fire_at = p.parse_divert(frame.payload)
            except ProtocolError:
                c.naks += 1
                self._send(p.MsgType.NAK, p.nak_payload(frame.seq, p.NakReason.BAD_PAYLOAD), now)
                return
            self._divert(frame.seq, item_id, gate_id, fire_at, now, version)
        elif frame.type == p.MsgType.STATUS_REQ:
            self._status(now)
        else:
            c.naks += 1
            self._send(p.MsgType.NAK, p.nak_payload(frame.seq, p.NakReason.UNKNOWN_TYPE), now)

    def _divert(self, seq: int, item_id: int, gate_id: int, fire_at: int, now: float,
                version: int = p.PROTOCOL_VERSION) -> None:
        c = self.counters

        def answer(reason: int | None) -> None:  # in the protocol version the DIVERT came in
            if reason is None:
                c.acks += 1
                self._send(p.MsgType.ACK, p.ack_payload(seq, item_id, version), now)
            else:
                c.naks += 1
                self._send(p.MsgType.NAK, p.nak_payload(seq, reason, item_id, version), now)

        key = (item_id, gate_id)
        if key in self._known:
            # a retransmission whose ACK was lost: confirm again, schedule nothing
            c.duplicates += 1
            answer(None)
            return
        if gate_id not in self.gates:
            answer(p.NakReason.BAD_GATE)
            return
        pos = self.position(now)
        if fire_at <= pos:
            c.late += 1
            self._event("late", item_id=item_id, gate=gate_id, fire_at=fire_at, position=pos)
            answer(p.NakReason.LATE)
            return
        if len(self._schedule) >= MAX_SCHEDULED:
            self._event("queue_full", item_id=item_id, gate=gate_id, pending=len(self._schedule))
            answer(p.NakReason.QUEUE_FULL)
            return
        self._known[key] = fire_at
        heapq.heappush(self._schedule, _Scheduled(fire_at, item_id, gate_id))
        answer(None)

    def _fire_due(self, now: float) -> None:
        pos = self.position(now)
        while self._schedule and self._schedule[0].fire_at <= pos:
            s = heapq.heappop(self._schedule)
            # its fire position has passed: the id is forgotten (a later item may carry it again)
            self._known.pop((s.item_id, s.gate_id), None)
            self.counters.fired += 1
            self._event("fired", item_id=s.item_id, gate=s.gate_id, fire_at=s.fire_at,
                        fired_at=pos, state=self.state.name.lower())

    def _engage_failsafe(self, now: float) -> None:
        self._rebase(now)
        self.state = (p.CtrlState.FAILSAFE_STOPPED if self.failsafe == "stop_belt"
                      else p.CtrlState.FAILSAFE_DIVERT_ALL)
        pos = self.position(now)
        log.warning("host heartbeats lost for %.2f s: fail-safe %s at position %d",
                    now - self._last_host_rx, self.failsafe, pos)
        self._event("failsafe", mode=self.failsafe, position=pos,
                    silent_s=round(now - self._last_host_rx, 4))
        self._send(p.MsgType.FAULT, p.fault_payload(p.FaultCode.HOST_HEARTBEAT_LOST, pos), now)
        self._status(now)

    def _clear_failsafe(self, now: float) -> None:
        self._rebase(now)
        self.state = p.CtrlState.RUNNING
        pos = self.position(now)
        log.warning("host heartbeats back: fail-safe cleared at position %d", pos)
        self._event("failsafe_cleared", mode=self.failsafe, position=pos)
        self._send(p.MsgType.FAULT, p.fault_payload(p.FaultCode.HOST_HEARTBEAT_BACK, pos), now)
        self._status(now)

    def _on_bytes(self, data: bytes, now: float) -> None:
        before = self._decoder.crc_errors
        frames = self._decoder.feed(data)
        self.counters.crc_errors += self._decoder.crc_errors - before
        for frame in frames:
            if self.rng.random() < self.faults.drop:
                self.counters.dropped_rx += 1
                continue
            if self.rng.random() < self.faults.corrupt:
                # as if a bit flipped on the wire: the CRC would reject it
                self.counters.corrupted_rx += 1
                self.counters.crc_errors += 1
                continue
            self.handle(frame, now)

    # --- the pty loop -------------------------------------------------------
    def open_pty(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass unchanged
        os.set_blocking(master, False)
        self._fd, self._slave_fd = master, slave
        return os.ttyname(slave)

    def serve(self) -> dict:
        """Run until request_stop(); return the counters."""
        if self._fd is None:
            raise DeviceError("open_pty() must be called before serve()")
        self._event("start", rate_counts_per_s=self.rate, failsafe=self.failsafe,
                    faults=self.faults.__dict__)
        next_hb = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            silent = self.silenced(now)
            wake = [next_hb, now + 0.05]
            if self._schedule:
                wake.append(self._time_of(self._schedule[0].fire_at))
            if self._outbox and not silent:
                wake.append(self._outbox[0][0])
            if self.state == p.CtrlState.RUNNING and self._last_host_rx is not None:
                wake.append(self._last_host_rx + self.heartbeat_timeout_s)
            timeout = max(0.0, min(wake) - now)
            try:
                ready, _, _ = select.select([self._fd], [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            silent = self.silenced(now)
            if ready:
                try:
                    data = os.read(self._fd, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: slave side has no reader right now
                        raise
                    data = b""
                if data and not silent:
                    self._on_bytes(data, now)
            if (self.state == p.CtrlState.RUNNING and self._last_host_rx is not None
                    and now - self._last_host_rx > self.heartbeat_timeout_s):
                self._engage_failsafe(now)
            self._fire_due(now)
            if now >= next_hb:
                if not silent:
                    self._send(p.MsgType.HEARTBEAT,
                               p.ctrl_heartbeat_payload(self.position(now), int(self.state)), now)
                next_hb = now + self.heartbeat_s
            if silent:
                self._outbox.clear()  # a silent controller says nothing, later either
            else:
                self._flush_outbox(now)
        counters = dict(self.counters.__dict__)
        self._event("stop", position=self.position(), counters=counters)
        return counters

    def close(self) -> None:
        for fd in (self._fd, getattr(self, "_slave_fd", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = None
        if self._log:
            self._log.close()
            self._log = None


def run_emulator(*, port_link: str | None, port_file: str | None, **kwargs) -> dict:
    """Create the pty, publish its path, serve until SIGTERM/SIGINT; return counters."""
    if port_link:
        link = Path(port_link)
        if link.exists() and not link.is_symlink():
            # only a stale symlink of ours is replaced; a real file or folder is somebody's data
            raise DeviceError(f"--port {port_link}: a file is already there and it is not a symlink; "
                              "choose another path (the emulator replaces only its own old symlink)")
    emu = ControllerEmulator(**kwargs)
    path = emu.open_pty()
    if port_link:
        if link.is_symlink():
            link.unlink()
        link.symlink_to(path)
    print(f"PORT {path}", flush=True)
    if port_file:
        tmp = Path(port_file).with_suffix(".tmp")
        tmp.write_text(path + "\n")
        tmp.replace(port_file)  # atomic: a reader never sees half a path
    signal.signal(signal.SIGTERM, emu.request_stop)
    signal.signal(signal.SIGINT, emu.request_stop)
    signal.signal(signal.SIGUSR1, emu.toggle_silence)
    try:
        return emu.serve()
    finally:
        emu.close()
        if port_link and Path(port_link).is_symlink():
            Path(port_link).unlink()
