"""Frame format: round trip, CRC errors, resynchronisation after garbage, sequence wrap."""

import random

import pytest
from damage_rig.rig.divert import protocol as p
from damage_rig.rig.foundation.errors import ProtocolError


def test_crc16_ccitt_false_check_value():
    # the catalogued check value of CRC-16/CCITT-FALSE over "123456789"
    assert p.crc16(b"123456789") == 0x29B1
    assert p.crc16(b"") == 0xFFFF


def test_frame_layout_byte_offsets():
    # protocol version 2: a u64 item id
    frame = p.encode(0x12, p.MsgType.DIVERT, p.divert_payload(7, 1, 1500))
    assert frame[0] == p.SOF
    assert frame[1] == 17  # payload length
    assert frame[2] == 0x12 and frame[3] == p.MsgType.DIVERT
    assert frame[4:12] == (7).to_bytes(8, "little")
    assert frame[12] == 1
    assert frame[13:21] == (1500).to_bytes(8, "little", signed=True)
    assert int.from_bytes(frame[21:23], "little") == p.crc16(frame[1:21])
    assert len(frame) == p.HEADER_LEN + 17 + p.CRC_LEN


def test_version_1_frames_still_parse():
    v1 = p.divert_payload(7, 1, 1500, version=1)
    assert len(v1) == 13 and p.divert_version(v1) == 1
    assert p.parse_divert(v1) == (7, 1, 1500)
    assert p.parse_ack(p.ack_payload(5, 6, version=1)) == (5, 6)
    assert p.parse_nak(p.nak_payload(5, 1, 6, version=1)) == (5, 1, 6)
    with pytest.raises(ProtocolError, match="u32"):
        p.divert_payload(2**32, 1, 1500, version=1)


def test_u64_item_ids_and_i64_fire_at_bounds_are_protocol_errors_not_struct_errors():
    top = 2**64 - 1
    assert p.parse_divert(p.divert_payload(top, 1, 2**63 - 1)) == (top, 1, 2**63 - 1)
    assert p.parse_ack(p.ack_payload(1, top)) == (1, top)
    for item, fire in ((2**64, 0), (-1, 0), (1, 2**63), (1, -(2**63) - 1)):
        with pytest.raises(ProtocolError):
            p.divert_payload(item, 1, fire)


@pytest.mark.parametrize("msg_type,payload", [
    (p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(-5, p.CtrlState.RUNNING)),
    (p.MsgType.HEARTBEAT, p.host_heartbeat_payload(123456)),
    (p.MsgType.DIVERT, p.divert_payload(0xFFFFFFFF, 255, 2**62)),
    (p.MsgType.DIVERT, p.divert_payload(2**64 - 1, 255, 2**62)),
    (p.MsgType.ACK, p.ack_payload(200, 42)),
    (p.MsgType.NAK, p.nak_payload(3, p.NakReason.LATE, 42)),
    (p.MsgType.STATUS_REQ, b""),
    (p.MsgType.STATUS, p.status_payload(10, 2, 3, 4, 5, 6)),
    (p.MsgType.FAULT, p.fault_payload(p.FaultCode.HOST_HEARTBEAT_LOST, 99)),
])
def test_round_trip_whole_and_byte_by_byte(msg_type, payload):
    frame = p.encode(77, msg_type, payload)
    assert p.Decoder().feed(frame) == [p.Frame(77, msg_type, payload)]
    d = p.Decoder()
    got = [f for b in frame for f in d.feed(bytes([b]))]
    assert got == [p.Frame(77, msg_type, payload)]
    assert d.crc_errors == 0 and d.pending_bytes == 0


def test_payload_parsers_give_back_the_fields():
    assert p.parse_divert(p.divert_payload(9, 2, -100)) == (9, 2, -100)
    assert p.parse_ctrl_heartbeat(p.ctrl_heartbeat_payload(1234, 1)) == (1234, 1)
    assert p.parse_ack(p.ack_payload(5, 6)) == (5, 6)
    assert p.parse_nak(p.nak_payload(5, 1, 6)) == (5, 1, 6)
    assert p.parse_status(p.status_payload(1, 2, 3, 4, 5, 6))["pending"] == 6
    assert p.parse_fault(p.fault_payload(3, -1)) == (3, -1)


def test_every_single_bit_flip_is_rejected_and_the_next_frame_survives():
    good = p.encode(1, p.MsgType.DIVERT, p.divert_payload(7, 1, 1500))
    after = p.encode(2, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(10, 0))
    for bit in range(len(good) * 8):
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        d = p.Decoder()
        # a flipped LEN can make the decoder wait for up to MAX_FRAME bytes before it
        # rejects the candidate; on a live link heartbeats bring those bytes
        frames = d.feed(bytes(bad) + after + bytes(p.MAX_FRAME))
        assert frames == [p.Frame(2, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(10, 0))], bit
        assert d.crc_errors + d.resyncs >= 1


def test_resynchronises_after_garbage_full_of_start_bytes():
    rng = random.Random(4)
    sent, stream = [], bytearray()
    for i in range(200):
        # garbage biased towards SOF and plausible lengths, the worst case for a hunter
        stream += bytes(rng.choice([p.SOF, 3, 9, rng.randrange(256)]) for _ in range(rng.randrange(0, 12)))
        f = p.Frame(i % 256, p.MsgType.ACK, p.ack_payload(i % 256, i))
        sent.append(f)
        stream += p.encode(f.seq, f.type, f.payload)
    d = p.Decoder()
    got = []
    for k in range(0, len(stream), 7):  # arbitrary chunking, as a UART read returns
        got += d.feed(bytes(stream[k:k + 7]))
    assert got == sent
    assert d.resyncs > 0 and d.skipped > 0


def test_truncated_frame_then_new_frame():
    good = p.encode(3, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(1, 0))
    d = p.Decoder()
    assert d.feed(good[:6]) == []
    # the rest never comes; the next frame starts: the truncated one fails its CRC and is skipped
    assert d.feed(good) == [p.Frame(3, p.MsgType.HEARTBEAT, p.ctrl_heartbeat_payload(1, 0))]
    assert d.crc_errors >= 1


def test_sequence_numbers_wrap_at_256():
    frames = [p.encode(i % 256, p.MsgType.HEARTBEAT, b"") for i in range(600)]
    got = p.Decoder().feed(b"".join(frames))
    assert [f.seq for f in got] == [i % 256 for i in range(600)]


def test_out_of_range_fields_raise_protocol_error():
    with pytest.raises(ProtocolError, match="sequence"):
        p.encode(256, p.MsgType.ACK)
    with pytest.raises(ProtocolError, match="exceeds"):
        p.encode(0, p.MsgType.ACK, bytes(p.MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="item id"):
        p.divert_payload(-1, 1, 0)
    with pytest.raises(ProtocolError, match="DIVERT payload is 3 bytes"):
        p.parse_divert(b"abc")


def test_length_beyond_maximum_is_skipped_not_waited_for():
    d = p.Decoder()
    good = p.encode(1, p.MsgType.STATUS_REQ)
    # a SOF followed by an impossible length must not make the decoder wait for 200 bytes
    assert d.feed(bytes([p.SOF, 200]) + good) == [p.Frame(1, p.MsgType.STATUS_REQ, b"")]
