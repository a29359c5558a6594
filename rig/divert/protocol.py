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

Protocol version 2 widens the item id from u32 to u64 (ids are unique across
restarts and years: rig/item_ids.py). The version is told by the payload
length, so one controller serves both: a 17-byte DIVERT is version 2 and is
answered by a 9-byte ACK / 10-byte NAK; a 13-byte DIVERT is version 1 and is
answered in version 1. The host sends version 2.
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
    QUEUE_FULL = 6    # the controller's schedule is at its bound (MAX_SCHEDULED)


class CtrlState(IntEnum):
    RUNNING = 0
    FAILSAFE_DIVERT_ALL = 1  # host heartbeats lost: the gate diverts everything
    FAILSAFE_STOPPED = 2     # host heartbeats lost: the belt is stopped


class FaultCode(IntEnum):
    HOST_HEARTBEAT_LOST = 1
    HOST_HEARTBEAT_BACK = 2
    BAD_FRAMES = 3


PROTOCOL_VERSION = 2
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

# payload layouts (little-endian)
_DIVERT = struct.Struct("<QBq")        # v2: item_id u64, gate_id u8, fire_at i64 counts
_DIVERT_V1 = struct.Struct("<IBq")     # v1: item_id u32
_CTRL_HEARTBEAT = struct.Struct("<qB")  # position i64 counts, state u8
_HOST_HEARTBEAT = struct.Struct("<I")   # host uptime ms u32 (informative)
_ACK = struct.Struct("<BQ")            # v2: seq being acknowledged, its item_id u64
_NAK = struct.Struct("<BBQ")           # v2: seq being refused, reason, its item_id u64
_ACK_V1 = struct.Struct("<BI")         # v1: item_id u32
_NAK_V1 = struct.Struct("<BBI")
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


def _check_item_id(item_id: int, version: int = PROTOCOL_VERSION) -> None:
    top = U64_MAX if version >= 2 else 0xFFFFFFFF
    if not isinstance(item_id, int) or not 0 <= item_id <= top:
        raise ProtocolError(f"item id {item_id} does not fit the protocol version {version} payload "
                            f"({'u64' if version >= 2 else 'u32'})")


def divert_payload(item_id: int, gate_id: int, fire_at: int, version: int = PROTOCOL_VERSION) -> bytes:
    _check_item_id(item_id, version)
    if not 0 <= gate_id <= 255:
        raise ProtocolError(f"gate id {gate_id} out of range 0..255")
    if not isinstance(fire_at, int) or not I64_MIN <= fire_at <= I64_MAX:
        raise ProtocolError(f"fire_at {fire_at} does not fit the DIVERT payload (i64 counts)")
    return (_DIVERT if version >= 2 else _DIVERT_V1).pack(item_id, gate_id, fire_at)


def divert_version(payload: bytes) -> int:
    """The protocol version a DIVERT payload was written in (by its length); ProtocolError if neither."""
    if len(payload) == _DIVERT.size:
        return 2
    if len(payload) == _DIVERT_V1.size:
        return 1
    raise ProtocolError(f"DIVERT payload is {len(payload)} bytes, expected {_DIVERT.size} (v2) "
                        f"or {_DIVERT_V1.size} (v1)")


def parse_divert(payload: bytes) -> tuple[int, int, int]:
    """-> (item_id, gate_id, fire_at), from a version 2 or version 1 payload."""
    return (_DIVERT if divert_version(payload) == 2 else _DIVERT_V1).unpack(payload)


def ctrl_heartbeat_payload(position: int, state: int) -> bytes:
    return _CTRL_HEARTBEAT.pack(position, state)


def parse_ctrl_heartbeat(payload: bytes) -> tuple[int, int]:
    """-> (position, state)."""
    return _unpack(_CTRL_HEARTBEAT, payload, "controller HEARTBEAT")


def host_heartbeat_payload(uptime_ms: int) -> bytes:
    return _HOST_HEARTBEAT.pack(uptime_ms & 0xFFFFFFFF)


def ack_payload(seq: int, item_id: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    _check_item_id(item_id, version)
    return (_ACK if version >= 2 else _ACK_V1).pack(seq, item_id)


def parse_ack(payload: bytes) -> tuple[int, int]:
    """-> (seq, item_id), v2 or v1. The item id guards against a stale ACK after seq wrap-around."""
    return _unpack(_ACK_V1 if len(payload) == _ACK_V1.size else _ACK, payload, "ACK")


def nak_payload(seq: int, reason: int, item_id: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    _check_item_id(item_id, version)
    return (_NAK if version >= 2 else _NAK_V1).pack(seq, reason, item_id)


def parse_nak(payload: bytes) -> tuple[int, int, int]:
    """-> (seq, reason, item_id), v2 or v1; item_id 0 when the controller could not read it."""
    return _unpack(_NAK_V1 if len(payload) == _NAK_V1.size else _NAK, payload, "NAK")


def status_payload(position: int, state: int, fired: int, late: int, crc_errors: int,
                   pending: int) -> bytes:
    m = 0xFFFFFFFF  # counters of a long-lived controller wrap rather than overflow the u32 fields
    return _STATUS.pack(position, state, fired & m, late & m, crc_errors & m, pending & m)


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
