"""Modbus RTU coil backend against pymodbus's own RTU server, over ptys.

Two ptys joined by a copying thread make a null-modem cable: the server opens
one slave path, our link the other, both through pyserial as on a real rig.
"""

import asyncio
import os
import select
import threading
import time
import tty

import pytest

pytest.importorskip("pymodbus")

from damage_rig.rig.divert.base import open_link
from damage_rig.rig.divert.modbus import parse_modbus_url
from damage_rig.rig.foundation.errors import DeviceError


class NullModem:
    """Copy bytes between the masters of two ptys until stopped."""

    def __init__(self):
        self.ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self.ends.append((master, slave, os.ttyname(slave)))
        self._stop = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def paths(self):
        return self.ends[0][2], self.ends[1][2]

    def _pump(self):
        a, b = self.ends[0][0], self.ends[1][0]
        while not self._stop:
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(b if fd == a else a, data)

    def close(self):
        self._stop = True
        self._thread.join(2)
        for master, slave, _ in self.ends:
            os.close(master)
            os.close(slave)


@pytest.fixture
def plc():
    """pymodbus RTU server (unit 1, 16 coils) on one end; yields (client path, coil writes)."""
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer

    cable = NullModem()
    writes = []  # (monotonic time, address, value) of every coil write the PLC received

    def trace_pdu(sending, pdu):
        if not sending and pdu.function_code == 5:
            writes.append((time.monotonic(), pdu.address, bool(pdu.bits[0])))
        return pdu

    context = ModbusServerContext(devices={1: ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [False] * 16))})  # pymodbus blocks start at 1
    loop = asyncio.new_event_loop()
    holder = {}

    async def serve():
        # pymodbus binds its server to the running loop: build it inside
        holder["server"] = ModbusSerialServer(context, framer=FramerType.RTU, port=cable.paths[0],
                                              baudrate=115200, trace_pdu=trace_pdu)
        await holder["server"].serve_forever()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    time.sleep(0.3)
    yield cable.paths[1], writes
    asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(5)
    thread.join(5)
    cable.close()


def test_url_parsing_and_errors():
    assert parse_modbus_url("modbus-rtu:///dev/ttyUSB0?unit=3&coil=8&speed=0.4") == {
        "port": "/dev/ttyUSB0", "unit": 3, "coil": 8, "pulse_ms": 150.0, "speed": 0.4}
    with pytest.raises(DeviceError, match="unknown parameter"):
        parse_modbus_url("modbus-rtu:///dev/ttyUSB0?baud=9600")
    with pytest.raises(DeviceError, match="belt speed"):
        open_link("modbus-rtu:///dev/null")


def test_coil_pulses_at_the_firing_moment(plc):
    port, writes = plc
    speed, cpm = 1.0, 1000.0
    link = open_link(f"modbus-rtu://{port}?unit=1&coil=4&pulse_ms=60", baud=115200,
                     ack_timeout_ms=40, speed_mps=speed, counts_per_m=cpm)
    try:
        assert link.wait_ready(5.0) and link.healthy
        results = []
        t = time.monotonic()
        planned = {}
        for item, ahead_m in [(1, 0.15), (2, 0.30)]:
            fire_at = link.position_at(t) + int(ahead_m * cpm)
            planned[item] = t + ahead_m / speed
            link.divert(item, 2, fire_at, deadline=planned[item], on_result=results.append)
        link.divert(3, 2, link.position_at(t) - 10, deadline=t, on_result=results.append)
        end = time.monotonic() + 3
        while len(results) < 3 and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.15)  # let the last pulse end
    finally:
        link.close()
    by_item = {r.item_id: r for r in results}
    assert by_item[1].acked and by_item[2].acked
    assert by_item[3].late and by_item[3].attempts == 0
    coil = 4 + 2 - 1  # gate 2 -> second coil from the base
    assert [(a, v) for _, a, v in writes] == [(coil, True), (coil, False), (coil, True), (coil, False)]
    on_times = [t for t, _, v in writes if v]
    off_times = [t for t, _, v in writes if not v]
    for got, item in zip(on_times, (1, 2)):
        assert got - planned[item] == pytest.approx(0.0, abs=0.05)
    for on, off in zip(on_times, off_times):
        assert off - on == pytest.approx(0.06, abs=0.05)
