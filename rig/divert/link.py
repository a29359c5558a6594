"""Host side of the divert link: reliable DIVERT delivery and the belt clock model.

``SerialLink`` owns one serial port (opened with ``serial.serial_for_url``, so
a device path, a pty path, ``loop://`` and ``spy://`` all work) and two
threads:

- the I/O thread reads and decodes frames, matches ACK/NAK to outstanding
  DIVERTs, retransmits on ACK timeout, expires diverts whose deadline passed,
  sends the host HEARTBEAT every period, and reopens a vanished port;
- the dispatch thread runs the callers' ``on_result`` callbacks, so a slow
  callback never delays the serial line.

Guarantee: every ``divert()`` ends in exactly one :class:`DivertResult` —
acked, late (NAK late from the controller, or the deadline passed first) or a
fault (no ACK after the retries, a NAK for another reason, the port vanished,
the link was closed). Nothing is silently dropped.

The clock model: each controller HEARTBEAT/STATUS carries the belt position
(encoder counts). The link stamps it with the host's monotonic receive time,
less the frame's time on the wire at the configured baud, and fits a line
through the recent samples; ``position_at(t)`` evaluates that line.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..foundation.errors import DeviceError
from . import protocol as p
from .base import LINKS, DivertResult

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 128  # < 256 so a sequence number is never ambiguous after wrap-around
CLOCK_WINDOW_S = 2.0
CLOCK_MAX_SAMPLES = 512
LINK_COUNTERS = ("sent", "acked", "nak", "retransmits", "crc_errors", "resyncs", "late", "faults",
                 "heartbeats_rx", "controller_faults", "port_errors", "nak_unmatched")


@dataclass
class _Pending:
    item_id: int
    gate_id: int
    fire_at: int
    deadline: float
    on_result: Callable[[DivertResult], None]
    seq: int
    frame: bytes
    sent_at: float
    last_tx: float
    attempts: int = 1


class BeltClock:
    """The controller's belt position as a line through its recent reports (host monotonic time).

    Not thread-safe on its own: the link calls it under its lock.
    """

    def __init__(self, window_s: float = CLOCK_WINDOW_S):
        self.window_s = window_s
        # bounded by count as well as by time: a controller that floods heartbeats cannot grow it
        self.samples: deque[tuple[float, int]] = deque(maxlen=CLOCK_MAX_SAMPLES)
        self.state: int | None = None  # the controller's state of the last report

    def clear(self) -> None:
        self.samples.clear()

    def add(self, t: float, pos: int, state: int) -> None:
        if state != self.state:
            self.samples.clear()  # the belt changed regime (stopped/restarted): refit
            self.state = state
        self.samples.append((t, pos))
        while self.samples and t - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    @staticmethod
    def rate(samples: list[tuple[float, int]]) -> float | None:
        """Counts per second: the least-squares slope (None with fewer than two reports)."""
        if len(samples) < 2 or samples[-1][0] - samples[0][0] < 1e-3:
            return None
        tm = sum(t for t, _ in samples) / len(samples)
        pm = sum(q for _, q in samples) / len(samples)
        var = sum((t - tm) ** 2 for t, _ in samples)
        return sum((t - tm) * (q - pm) for t, q in samples) / var

    @classmethod
    def position(cls, samples: list[tuple[float, int]], t_monotonic: float) -> int:
        """The position at ``t_monotonic`` from a copy of the samples (at least one)."""
        rate = cls.rate(samples)
        if rate is None:
            return samples[-1][1]
        # least-squares line through the window, anchored at the sample mean
        tm = sum(t for t, _ in samples) / len(samples)
        pm = sum(q for _, q in samples) / len(samples)
        return round(pm + rate * (t_monotonic - tm))


class SerialLink:
    """The divert link over a serial port; see the module docstring."""

    def __init__(self, url: str, *, baud: int = 115200, ack_timeout_ms: float = 40.0,
                 retries: int = 3, heartbeat_period_ms: float = 200.0,
                 counts_per_m: float = 1000.0, controller_timeout_s: float | None = None,
                 reconnect_s: float = 1.0):
        self.url = url
        self.baud = baud
        self.ack_timeout = ack_timeout_ms / 1000.0
        self.retries = retries
        self.heartbeat_period = heartbeat_period_ms / 1000.0
        self.counts_per_m = counts_per_m
        self.controller_timeout = (controller_timeout_s if controller_timeout_s is not None
                                   else max(1.0, 5 * self.heartbeat_period))
        self.reconnect_s = reconnect_s
        self.counters = dict.fromkeys(LINK_COUNTERS, 0)
        self.last_error: str | None = None
        self.last_status: dict | None = None
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._seq = itertools.cycle(range(256))
        self._decoder = p.Decoder()
        self._clock = BeltClock()
        self._last_rx: float | None = None
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._results: queue.Queue = queue.Queue()
        self._t0 = time.monotonic()
        self._ser = None
        self._open_port()  # the first open must succeed: a wrong path is a config error
        self._io = threading.Thread(target=self._io_loop, name="divert-io", daemon=True)
        self._dispatch = threading.Thread(target=self._dispatch_loop, name="divert-results",
                                          daemon=True)
        self._io.start()
        self._dispatch.start()

    # --- port ---------------------------------------------------------------
    def _open_port(self) -> None:
        import serial

        try:
            ser = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0.005,
                                        write_timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"cannot open divert port {self.url!r}: {exc}; check divert.url "
                              "(a device path, a pty path printed by `rig divert emulate`, "
                              "loop:// or spy://...)") from exc
        ser.reset_input_buffer()  # stale positions would bend the clock model
        self._decoder = p.Decoder()
        self._ser = ser
        log.info("divert link open on %s at %d baud", self.url, self.baud)

    def _port_lost(self, exc: BaseException) -> None:
        """Close the port, report every outstanding divert as a fault; the I/O loop reopens."""
        with self._lock:
            if self._ser is None:
                return
            self.counters["port_errors"] += 1
            self.last_error = f"divert port {self.url} lost: {exc}"
            log.error("%s; outstanding diverts fail, reconnecting every %.1f s",
                      self.last_error, self.reconnect_s)
            try:
                self._ser.close()
            except Exception as close_exc:  # noqa: BLE001 - the port is already broken
                log.debug("closing the broken port failed too: %s", close_exc)
            self._ser = None
            self._ready.clear()
            self._clock.clear()
            for entry in list(self._pending.values()):
                self._finish(entry, fault=f"port lost: {exc}")

    def _write(self, frame: bytes) -> bool:
        ser = self._ser
        if ser is None:
            return False
        try:
            with self._write_lock:
                ser.write(frame)
            return True
        except Exception as exc:  # noqa: BLE001 - pyserial raises SerialException, OSError, TypeError on a closed fd
            self._port_lost(exc)
            return False

    # --- public API ---------------------------------------------------------
    @property
    def healthy(self) -> bool:
        last = self._last_rx
        return (self._ser is not None and not self._closed.is_set() and last is not None
                and time.monotonic() - last < self.controller_timeout)

    @property
    def heartbeat_age_s(self) -> float | None:
        """Seconds since the controller last sent anything (None: nothing yet)."""
        last = self._last_rx
        return None if last is None else time.monotonic() - last

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the first controller heartbeat (after open or reopen) has arrived."""
        return self._ready.wait(timeout_s)

    def position_at(self, t_monotonic: float) -> int:
        """Belt position (counts) at a host monotonic time, from the controller's reports."""
        with self._lock:
            samples = list(self._clock.samples)
        if not samples:
            raise DeviceError(f"no belt position from the controller on {self.url} yet "
                              "(call wait_ready first; is the controller sending heartbeats?)")
        return BeltClock.position(samples, t_monotonic)

    @property
    def controller_state(self) -> int | None:
        return self._clock.state

    @property
    def speed_mps(self) -> float | None:
        """Belt speed estimated from the controller's positions (None until two reports)."""
        with self._lock:
            rate = BeltClock.rate(list(self._clock.samples))
        return None if rate is None else rate / self.counts_per_m

    def divert(self, item_id: int, gate_id: int, fire_at: int, deadline: float,
               on_result: Callable[[DivertResult], None]) -> None:
        """Send DIVERT; never blocks on the controller. ``on_result`` runs once, on the link's thread.

        ``deadline`` is the host monotonic time by which the ACK must be in
        (the item reaches the gate then); past it the divert is reported late.
        """
        now = time.monotonic()
        try:
            payload = p.divert_payload(item_id, gate_id, fire_at)
        except p.ProtocolError as exc:
            payload, bad = b"", str(exc)  # a field that cannot go on the wire is a fault, never a raise
        else:
            bad = None
        with self._lock:
            base = {"item_id": item_id, "gate_id": gate_id, "fire_at": fire_at,
                    "deadline": deadline, "on_result": on_result, "sent_at": now,
                    "last_tx": now, "attempts": 0}
            if bad is not None:
                self._finish(_Pending(seq=-1, frame=b"", **base), fault=bad)
                return
            if self._closed.is_set() or self._ser is None:
                why = "link closed" if self._closed.is_set() else (self.last_error or "port not open")
                self._finish(_Pending(seq=-1, frame=b"", **base), fault=why)
                return
            if now >= deadline:
                self._finish(_Pending(seq=-1, frame=b"", **base), late=True,
                             detail="deadline had passed before sending")
                return
            if len(self._pending) >= MAX_IN_FLIGHT:
                self._finish(_Pending(seq=-1, frame=b"", **base),
                             fault=f"more than {MAX_IN_FLIGHT} diverts awaiting ACK")
                return
            seq = next(self._seq)
            while seq in self._pending:
                seq = next(self._seq)
            entry = _Pending(seq=seq, frame=p.encode(seq, p.MsgType.DIVERT, payload), **base)
            entry.attempts = 1
            self._pending[seq] = entry
            self.counters["sent"] += 1
        self._write(entry.frame)

    def close(self, drain_s: float | None = None) -> None:
        """Stop the threads; diverts sent and awaiting their ACK get up to ``drain_s`` (default: every
        retry's timeout) to be answered first, so a clean stop does not turn a divert the controller
        fired into a fault; what is still outstanding then ends as a fault ('link closed')."""
        if self._closed.is_set():
            return
        end = time.monotonic() + (self.ack_timeout * (self.retries + 1) if drain_s is None else drain_s)
        while time.monotonic() < end and self._io.is_alive():
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.005)
        self._closed.set()
        self._io.join(timeout=2.0)
        with self._lock:
            for entry in list(self._pending.values()):
                self._finish(entry, fault="link closed")
            if self._ser is not None:
                self._ser.close()
                self._ser = None
        self._results.put(None)
        self._dispatch.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- internals ----------------------------------------------------------
    def _finish(self, entry: _Pending, *, acked: bool = False, late: bool = False,
                fault: str | None = None, detail: str = "") -> None:
        """Record one outcome (caller holds the lock) and queue its callback."""
        self._pending.pop(entry.seq, None)
        if acked:
            self.counters["acked"] += 1
        elif late:
            self.counters["late"] += 1
        else:
            self.counters["faults"] += 1
            fault = fault or "unknown fault"
        res = DivertResult(item_id=entry.item_id, acked=acked, late=late and not acked,
                           fault=None if (acked or late) else fault, attempts=entry.attempts,
                           sent_at=entry.sent_at, done_at=time.monotonic(),
                           gate_id=entry.gate_id, fire_at=entry.fire_at, detail=detail or (fault or ""))
        self._results.put((entry.on_result, res))

    def _dispatch_loop(self) -> None:
        while True:
            job = self._results.get()
            if job is None:
                return
            callback, res = job
            try:
                callback(res)
            except Exception:  # a caller's bug must not stop later results
                log.exception("divert result callback failed for item %d", res.item_id)

    def _io_loop(self) -> None:
        next_hb = time.monotonic()
        next_reopen = 0.0
        while not self._closed.is_set():
            now = time.monotonic()
            ser = self._ser
            if ser is None:
                if now >= next_reopen:
                    next_reopen = now + self.reconnect_s
                    try:
                        self._open_port()
                        log.warning("divert port %s reopened", self.url)
                    except DeviceError as exc:
                        log.debug("reopen failed: %s", exc)
                self._closed.wait(0.05)
                continue
            try:
                data = ser.read(max(1, ser.in_waiting))
            except Exception as exc:  # noqa: BLE001 - SerialException, OSError, TypeError after close
                self._port_lost(exc)
                continue
            t_rx = time.monotonic()
            if data:
                self._on_bytes(data, t_rx)
            if t_rx >= next_hb:
                uptime = int((t_rx - self._t0) * 1000)
                self._write(p.encode(next(self._seq), p.MsgType.HEARTBEAT,
                                     p.host_heartbeat_payload(uptime)))
                next_hb = t_rx + self.heartbeat_period
            self._service_timers(t_rx)

    def _on_bytes(self, data: bytes, t_rx: float) -> None:
        d = self._decoder
        crc0, rs0 = d.crc_errors, d.resyncs
        frames = d.feed(data)
        with self._lock:
            self.counters["crc_errors"] += d.crc_errors - crc0
            self.counters["resyncs"] += d.resyncs - rs0
            for frame in frames:
                # when the last byte arrived, less the frame's own time on the wire
                t_sent = t_rx - (len(frame.payload) + p.HEADER_LEN + p.CRC_LEN) * 10 / self.baud
                self._handle(frame, t_sent)

    def _handle(self, frame: p.Frame, t_sent: float) -> None:
        try:
            if frame.type == p.MsgType.ACK:
                seq, item_id = p.parse_ack(frame.payload)
                entry = self._pending.get(seq)
                if entry is not None and entry.item_id == item_id:
                    self._finish(entry, acked=True)
            elif frame.type == p.MsgType.NAK:
                seq, reason, item_id = p.parse_nak(frame.payload)
                entry = self._pending.get(seq)
                if entry is None or entry.item_id != item_id:
                    # item id 0 (the controller could not read the DIVERT) or another item's: not this
                    # divert's answer; it is retransmitted and ends by its own ACK, NAK or deadline
                    self.counters["nak_unmatched"] += 1
                    return
                self.counters["nak"] += 1
                if reason == p.NakReason.LATE:
                    self._finish(entry, late=True, detail="controller: fire_at already passed")
                else:
                    self._finish(entry, fault=f"controller refused: {p.reason_name(reason)}")
            elif frame.type == p.MsgType.HEARTBEAT:
                pos, state = p.parse_ctrl_heartbeat(frame.payload)
                self.counters["heartbeats_rx"] += 1
                self._clock.add(t_sent, pos, state)
                self._ready.set()
            elif frame.type == p.MsgType.STATUS:
                self.last_status = p.parse_status(frame.payload)
                self._clock.add(t_sent, self.last_status["position"], self.last_status["state"])
            elif frame.type == p.MsgType.FAULT:
                code, pos = p.parse_fault(frame.payload)
                self.counters["controller_faults"] += 1
                name = p.FaultCode(code).name if code in p.FaultCode._value2member_map_ else code
                self.last_error = f"controller fault {name} at position {pos}"
                log.warning("%s", self.last_error)
            else:
                return  # not a controller message (e.g. our own frames echoed by loop://)
            self._last_rx = time.monotonic()
        except p.ProtocolError as exc:
            # a frame with a valid CRC but a wrong payload: a firmware mismatch, not noise
            self.last_error = f"bad {frame.type:#04x} frame from the controller: {exc}"
            log.warning("%s", self.last_error)

    def _service_timers(self, now: float) -> None:
        resend: list[bytes] = []
        with self._lock:
            for entry in list(self._pending.values()):
                if now >= entry.deadline:
                    self._finish(entry, late=True, detail=f"no ACK before the deadline "
                                                          f"({entry.attempts} attempt(s))")
                elif now - entry.last_tx >= self.ack_timeout:
                    if entry.attempts > self.retries:
                        self._finish(entry, fault=f"no ACK after {entry.attempts} attempt(s)")
                    else:
                        entry.attempts += 1
                        entry.last_tx = now
                        self.counters["retransmits"] += 1
                        resend.append(entry.frame)
        for frame in resend:
            self._write(frame)


@LINKS.register("serial")
def open_serial(url: str, *, baud: int = 115200, ack_timeout_ms: float = 40.0, retries: int = 3,
                heartbeat_period_ms: float = 200.0, counts_per_m: float = 1000.0,
                speed_mps: float | None = None) -> SerialLink:
    """Any URL pyserial's serial_for_url takes (a tty, a pty, ``loop://``, ``spy://``)."""
    return SerialLink(url, baud=baud, ack_timeout_ms=ack_timeout_ms, retries=retries,
                      heartbeat_period_ms=heartbeat_period_ms, counts_per_m=counts_per_m)
