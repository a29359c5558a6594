"""Modbus RTU actuator backend: the gate is a PLC coil, pulsed by the host.

For sites whose divert is a coil on a PLC rather than our gate controller.
URL: ``modbus-rtu://PORT?unit=1&coil=0&pulse_ms=150&speed=0.5`` where PORT is
anything pyserial's serial_for_url opens (``/dev/ttyUSB0``, a pty path). The
coil of gate ``g`` is ``coil + g - 1``.

A coil has no notion of belt position, so the host is the clock here: belt
position = (now - link start) * speed * counts_per_m, and a DIVERT becomes
"set the coil at the moment the belt reaches fire_at, clear it pulse_ms
later". The result of a divert is known when the PLC answered the coil write:
acked when it did within ack_timeout of the firing moment, late when the
firing moment had already passed when divert() was called (or the write was
confirmed after it plus ack_timeout), a fault when every retry failed.
A periodic read of the coil is the heartbeat: ``healthy`` is the PLC answering.

Needs pymodbus (``pip install damage-rig[modbus]``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from ..foundation.errors import DeviceError
from .base import LINKS, DivertResult

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Job:
    at: float
    order: int
    kind: str = field(compare=False)  # "on" | "off"
    gate_id: int = field(compare=False)
    item_id: int = field(compare=False, default=0)
    fire_at: int = field(compare=False, default=0)
    sent_at: float = field(compare=False, default=0.0)
    on_result: Callable[[DivertResult], None] | None = field(compare=False, default=None)


def parse_modbus_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme != "modbus-rtu" or not (parts.netloc + parts.path):
        raise DeviceError(f"divert url {url!r}: expected modbus-rtu://PORT?unit=1&coil=0&speed=0.5")
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {"unit", "coil", "pulse_ms", "speed"}
    if set(q) - known:
        raise DeviceError(f"divert url {url!r}: unknown parameter(s) {sorted(set(q) - known)}; "
                          f"known: {sorted(known)}")
    try:
        return {"port": parts.netloc + parts.path, "unit": int(q.get("unit", 1)),
                "coil": int(q.get("coil", 0)), "pulse_ms": float(q.get("pulse_ms", 150)),
                "speed": float(q["speed"]) if "speed" in q else None}
    except ValueError as exc:
        raise DeviceError(f"divert url {url!r}: {exc}") from None


class ModbusLink:
    """Same interface as SerialLink (divert, position_at, counters, healthy, close)."""

    def __init__(self, url: str, *, baud: int = 19200, ack_timeout_ms: float = 40.0,
                 retries: int = 3, heartbeat_period_ms: float = 200.0,
                 counts_per_m: float = 1000.0, speed_mps: float | None = None):
        try:
            from pymodbus.client import ModbusSerialClient
            from pymodbus.framer import FramerType
        except ImportError as exc:
            raise DeviceError("the Modbus RTU divert backend needs pymodbus: "
                              "pip install 'damage-rig[modbus]'") from exc
        cfg = parse_modbus_url(url)
        speed = speed_mps if speed_mps is not None else cfg["speed"]
        if not speed or speed <= 0:
            raise DeviceError(f"divert url {url!r}: a coil backend needs the belt speed "
                              "(speed=... in the url, or belt.speed_mps)")
        self.url = url
        self.port = cfg["port"]
        self.unit, self.coil, self.pulse = cfg["unit"], cfg["coil"], cfg["pulse_ms"] / 1000.0
        self.rate = speed * counts_per_m
        self.counts_per_m = counts_per_m
        self.ack_timeout = ack_timeout_ms / 1000.0
        self.retries = retries
        self.heartbeat_period = heartbeat_period_ms / 1000.0
        self.counters = {k: 0 for k in ("sent", "acked", "nak", "retransmits", "crc_errors",
                                        "resyncs", "late", "faults", "heartbeats_rx",
                                        "controller_faults", "port_errors")}
        self.last_error: str | None = None
        self._client = ModbusSerialClient(port=self.port, framer=FramerType.RTU, baudrate=baud,
                                          timeout=max(0.05, 2 * self.ack_timeout), retries=0)
        if not self._client.connect():
            raise DeviceError(f"cannot open Modbus port {self.port!r} (from {url!r})")
        self._t0 = time.monotonic()
        self._jobs: list[_Job] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._ready = threading.Event()
        self._last_ok: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="divert-modbus", daemon=True)
        self._thread.start()

    # --- public API ---------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return (not self._closed and self._last_ok is not None
                and time.monotonic() - self._last_ok < max(1.0, 5 * self.heartbeat_period))

    @property
    def speed_mps(self) -> float:
        return self.rate / self.counts_per_m

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def position_at(self, t_monotonic: float) -> int:
        return round((t_monotonic - self._t0) * self.rate)

    def time_of(self, position: int) -> float:
        return self._t0 + position / self.rate

    def divert(self, item_id: int, gate_id: int, fire_at: int, deadline: float,
               on_result: Callable[[DivertResult], None]) -> None:
        """Schedule the coil pulse; ``deadline`` is unused (the firing moment is the deadline)."""
        now = time.monotonic()
        at = self.time_of(fire_at)
        job = _Job(at, next(self._order), "on", gate_id, item_id, fire_at, now, on_result)
        with self._cv:
            self.counters["sent"] += 1
            if self._closed or at <= now:
                self._result(job, late=not self._closed, fault="link closed" if self._closed else None,
                             attempts=0)
                return
            heapq.heappush(self._jobs, job)
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=3.0)
        for job in self._jobs:
            if job.kind == "on":
                self._result(job, fault="link closed", attempts=0)
        self._jobs.clear()
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- internals ----------------------------------------------------------
    def _result(self, job: _Job, *, acked: bool = False, late: bool = False,
                fault: str | None = None, attempts: int = 1) -> None:
        key = "acked" if acked else "late" if late else "faults"
        self.counters[key] += 1
        res = DivertResult(item_id=job.item_id, acked=acked, late=late and not acked,
                           fault=None if (acked or late) else (fault or "unknown fault"),
                           attempts=attempts, sent_at=job.sent_at, done_at=time.monotonic(),
                           gate_id=job.gate_id, fire_at=job.fire_at, detail=fault or "")
        try:
            job.on_result(res)
        except Exception:
            log.exception("divert result callback failed for item %d", job.item_id)

    def _write_coil(self, gate_id: int, value: bool) -> tuple[bool, int, str]:
        """Write with retries -> (ok, attempts, error)."""
        error = ""
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                self.counters["retransmits"] += 1
            try:
                rr = self._client.write_coil(self.coil + gate_id - 1, value, device_id=self.unit)
                if not rr.isError():
                    self._last_ok = time.monotonic()
                    return True, attempt, ""
                error = f"PLC answered an exception: {rr}"
                self.counters["nak"] += 1
            except Exception as exc:  # noqa: BLE001 - pymodbus raises ModbusException and OSError subclasses
                error = f"{type(exc).__name__}: {exc}"
                self.counters["port_errors"] += 1
        self.last_error = f"coil {self.coil + gate_id - 1} on {self.port}: {error}"
        return False, self.retries + 1, error

    def _heartbeat(self) -> None:
        try:
            rr = self._client.read_coils(self.coil, count=1, device_id=self.unit)
            ok = not rr.isError()
        except Exception as exc:  # noqa: BLE001 - see _write_coil
            ok = False
            self.last_error = f"Modbus heartbeat on {self.port}: {exc}"
        if ok:
            self.counters["heartbeats_rx"] += 1
            self._last_ok = time.monotonic()
            self._ready.set()

    def _loop(self) -> None:
        next_hb = time.monotonic()
        while True:
            with self._cv:
                if self._closed:
                    return
                now = time.monotonic()
                wake = min(next_hb, self._jobs[0].at if self._jobs else next_hb)
                if wake > now:
                    self._cv.wait(wake - now)
                    continue
                job = heapq.heappop(self._jobs) if self._jobs and self._jobs[0].at <= now else None
            if job is None:
                self._heartbeat()
                next_hb = time.monotonic() + self.heartbeat_period
                continue
            ok, attempts, error = self._write_coil(job.gate_id, job.kind == "on")
            if job.kind == "off":
                continue
            if ok:
                with self._cv:
                    heapq.heappush(self._jobs, _Job(job.at + self.pulse, next(self._order), "off",
                                                    job.gate_id))
                on_time = time.monotonic() - job.at <= self.ack_timeout
                self._result(job, acked=on_time, late=not on_time, attempts=attempts,
                             fault=None if on_time else "coil set after the firing moment")
            else:
                self._result(job, fault=f"no answer after {attempts} attempt(s): {error}",
                             attempts=attempts)


@LINKS.register("modbus-rtu")
def open_modbus(url: str, *, baud: int = 115200, ack_timeout_ms: float = 40.0, retries: int = 3,
                heartbeat_period_ms: float = 200.0, counts_per_m: float = 1000.0,
                speed_mps: float | None = None) -> ModbusLink:
    """``modbus-rtu://PORT?...``: a PLC coil as the gate."""
    return ModbusLink(url, baud=baud, ack_timeout_ms=ack_timeout_ms, retries=retries,
                      heartbeat_period_ms=heartbeat_period_ms, counts_per_m=counts_per_m,
                      speed_mps=speed_mps)
