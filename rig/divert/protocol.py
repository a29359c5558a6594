"""Wire format of the divert link between the host and the gate controller.

One frame on the wire (docs/serial-protocol.md has the full table)::

    offset 0   1     2     3     4 .. 4+LEN-1   4+LEN   5+LEN
           SOF LEN   SEQ   TYPE  PAYLOAD        CRC lo  CRC hi

SOF is 0xA5; LEN counts payload bytes only (at most ``MAX_PAYLOAD``); the
CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor) is
computed over LEN, SEQ, TYPE and PAYLOAD and sent little-endian.

There is no byte stuffing: a receiver finds frames by hunting for SOF and
trusting a candidate only when its CRC checks. When a candidate fails, the
decoder skips just that one SOF byte and hunts again, so a stray 0xA5 inside
line noise never swallows the real frame that follows it.

This module is pure (no I/O, no threads), so the host link, the emulator and
the tests share exactly one implementation of the format.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import IntEnum

from ..foundation.errors import ProtocolError

SOF = 0xA5
HEADER_LEN = 4  # SOF, LEN, SEQ, TYPE
CRC_LEN = 2
MAX_PAYLOAD = 32
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + CRC_LEN


class MsgType(IntEnum):
    """Message types; the direction each one travels is in the docs."""

    HEARTBEAT = 0x01   # both ways; controller's carries the belt position
    DIVERT = 0x02      # host -> controller, must be ACKed or NAKed
    ACK = 0x03         # controller -> host
    NAK = 0x04         # controller -> host, with a reason
    STATUS_REQ = 0x05  # host -> controller, answered by STATUS (no ACK)
    STATUS = 0x06      # controller -> host
    FAULT = 0x07       # controller -> host, unsolicited


class NakReason(IntEnum):
    LATE = 1         # fire_at had already passed when the DIVERT arrived
    BAD_GATE = 2     # no such gate on this controller
    BAD_PAYLOAD = 3  # payload length or contents wrong for the type
    UNKNOWN_TYPE = 4
    BELT_STOPPED = 5  # controller is in its stop_belt fail-safe


class CtrlState(IntEnum):
    RUNNING = 0
    FAILSAFE_DIVERT_ALL = 1  # host heartbeats lost: the gate diverts everything
    FAILSAFE_STOPPED = 2     # host heartbeats lost: the belt is stopped


class FaultCode(IntEnum):
    HOST_HEARTBEAT_LOST = 1
    HOST_HEARTBEAT_BACK = 2
    BAD_FRAMES = 3


# payload layouts (little-endian)
_DIVERT = struct.Struct("<IBq")        # item_id u32, gate_id u8, fire_at i64 counts
_CTRL_HEARTBEAT = struct.Struct("<qB")  # position i64 counts, state u8
_HOST_HEARTBEAT = struct.Struct("<I")   # host uptime ms u32 (informative)
_ACK = struct.Struct("<BI")            # seq being acknowledged, its item_id
_NAK = struct.Struct("<BBI")           # seq being refused, reason, its item_id
_STATUS = struct.Struct("<qBIIII")     # position, state, fired, late, crc_errors, pending
_FAULT = struct.Struct("<Bq")          # fault code, position


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE; ``crc16(b"123456789") == 0x29B1``.

    binascii.crc_hqx is exactly this CRC (MSB-first, poly 0x1021) and runs in C.
    """
    return binascii.crc_hqx(data, crc)


@dataclass(frozen=True)
class Frame:
    seq: int
    type: int
    payload: bytes = b""


def encode(seq: int, msg_type: int, payload: bytes = b"") -> bytes:
    """Serialise one frame; raise ProtocolError on out-of-range fields."""
    if not 0 <= seq <= 255:
        raise ProtocolError(f"sequence number {seq} out of range 0..255")
    if not 0 <= msg_type <= 255:
        raise ProtocolError(f"message type {msg_type} out of range 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds the maximum {MAX_PAYLOAD}")
    body = bytes((len(payload), seq, msg_type)) + payload
    return bytes((SOF,)) + body + struct.pack("<H", crc16(body))


class Decoder:
    """Incremental frame decoder that survives garbage, truncation and bit flips.

    Feed it whatever bytes the port returned; it yields every complete, valid
    frame and keeps the tail of an incomplete one for the next call. Counters
    say what it had to throw away: ``crc_errors`` (a candidate frame whose CRC
    or length failed) and ``resyncs`` (times it skipped bytes to find a SOF),
    ``skipped`` (bytes discarded).
    """

    def __init__(self):
        self._buf = bytearray()
        self.crc_errors = 0
        self.resyncs = 0
        self.skipped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        while buf:
            if buf[0] != SOF:
                i = buf.find(SOF)
                drop = len(buf) if i < 0 else i
                del buf[:drop]
                self.resyncs += 1
                self.skipped += drop
                continue
            if len(buf) < 2:
                break
            length = buf[1]
            if length > MAX_PAYLOAD:
                # cannot be a frame of ours: skip this SOF and hunt again
                del buf[:1]
                self.crc_errors += 1
                self.skipped += 1
                continue
            total = HEADER_LEN + length + CRC_LEN
            if len(buf) < total:
                break
            body = bytes(buf[1:HEADER_LEN + length])
            (crc_rx,) = struct.unpack_from("<H", buf, HEADER_LEN + length)
            if crc16(body) != crc_rx:
                del buf[:1]
                self.crc_errors += 1
                self.skipped += 1
                continue
            frames.append(Frame(seq=body[1], type=body[2], payload=body[3:]))
            del buf[:total]
        return frames

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)


# --- payload helpers: pack/unpack with a clear error on a bad length ----------

def _unpack(layout: struct.Struct, payload: bytes, what: str) -> tuple:
    if len(payload) != layout.size:
        raise ProtocolError(f"{what} payload is {len(payload)} bytes, expected {layout.size}")
    return layout.unpack(payload)


def divert_payload(item_id: int, gate_id: int, fire_at: int) -> bytes:
    if not 0 <= item_id <= 0xFFFFFFFF:
        raise ProtocolError(f"item id {item_id} does not fit the DIVERT payload (u32)")
    if not 0 <= gate_id <= 255:
        raise ProtocolError(f"gate id {gate_id} out of range 0..255")
    return _DIVERT.pack(item_id, gate_id, fire_at)


def parse_divert(payload: bytes) -> tuple[int, int, int]:
    """-> (item_id, gate_id, fire_at)."""
    return _unpack(_DIVERT, payload, "DIVERT")


def ctrl_heartbeat_payload(position: int, state: int) -> bytes:
    return _CTRL_HEARTBEAT.pack(position, state)


def parse_ctrl_heartbeat(payload: bytes) -> tuple[int, int]:
    """-> (position, state)."""
    return _unpack(_CTRL_HEARTBEAT, payload, "controller HEARTBEAT")


def host_heartbeat_payload(uptime_ms: int) -> bytes:
    return _HOST_HEARTBEAT.pack(uptime_ms & 0xFFFFFFFF)


def ack_payload(seq: int, item_id: int = 0) -> bytes:
    return _ACK.pack(seq, item_id)


def parse_ack(payload: bytes) -> tuple[int, int]:
    """-> (seq, item_id). The item id guards against a stale ACK after seq wrap-around."""
    return _unpack(_ACK, payload, "ACK")


def nak_payload(seq: int, reason: int, item_id: int = 0) -> bytes:
    return _NAK.pack(seq, reason, item_id)


def parse_nak(payload: bytes) -> tuple[int, int, int]:
    """-> (seq, reason, item_id)."""
    return _unpack(_NAK, payload, "NAK")


def status_payload(position: int, state: int, fired: int, late: int, crc_errors: int,
                   pending: int) -> bytes:
    return _STATUS.pack(position, state, fired, late, crc_errors, pending)


def parse_status(payload: bytes) -> dict:
    position, state, fired, late, crc_errors, pending = _unpack(_STATUS, payload, "STATUS")
    return {"position": position, "state": state, "fired": fired, "late": late,
            "crc_errors": crc_errors, "pending": pending}


def fault_payload(code: int, position: int) -> bytes:
    return _FAULT.pack(code, position)


def parse_fault(payload: bytes) -> tuple[int, int]:
    """-> (code, position)."""
    return _unpack(_FAULT, payload, "FAULT")


def reason_name(reason: int) -> str:
    try:
        return NakReason(reason).name.lower()
    except ValueError:
        return f"reason_{reason}"
