"""The master <-> slave register protocol (firmware/core/i2cproto.py) against real slaves.

The slaves are firmware/slave/main.py on the host's simulated bus: the same code that answers
on the board, with faults injected where real ones happen (noise, a slave that goes silent).
"""

from __future__ import annotations

import pytest

from firmware.core import i2cproto as p
from firmware.core import params
from firmware.host import SimBus, SimClock
from firmware.slave.main import Slave

METER, RELAY = 0x20, 0x21


def crc8_bitwise(data: bytes) -> int:
    """CRC-8/SMBUS the slow, obviously right way."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def test_crc8_is_smbus_pec() -> None:
    assert p.crc8(b"123456789") == 0xF4  # the catalogued check value of CRC-8/SMBUS
    for sample in (b"", b"\x00", b"\xff" * 7, bytes(range(256))):
        assert p.crc8(sample) == crc8_bitwise(sample)


def test_read_request_frame_layout() -> None:
    frame = p.encode_read(0x20, 0x0104, 24)
    assert frame[:5] == bytes([0x20, p.READ, 0x01, 0x04, 24])
    assert frame[5] == p.crc8(frame[:5])
    assert len(frame) == 6


def test_write_request_round_trips_through_the_slave_decoder() -> None:
    frame = p.encode_write(0x21, 0xF0, b"\x01")
    request = p.decode_request(frame, 0x21)
    assert isinstance(request, p.Request)
    assert (request.command, request.register, request.length, request.data) == (
        p.WRITE,
        0xF0,
        1,
        b"\x01",
    )
    assert p.decode_request(frame, 0x20) is None  # another slave's frame


def test_slave_refuses_corrupted_and_malformed_requests() -> None:
    frame = bytearray(p.encode_read(0x20, 0, 4))
    frame[2] ^= 0x40
    assert p.decode_request(bytes(frame), 0x20) == p.BAD_CRC
    assert p.decode_request(b"\x20\x52", 0x20) == p.BAD_LENGTH
    bad_command = p._frame(0x20, 0x99, 0, 4, b"")
    assert p.decode_request(bad_command, 0x20) == p.BAD_COMMAND
    zero_length = p._frame(0x20, p.READ, 0, 0, b"")
    assert p.decode_request(zero_length, 0x20) == p.BAD_LENGTH


def test_request_lengths_are_bounded() -> None:
    with pytest.raises(p.BadLengthError):
        p.encode_read(0x20, 0, 0)
    with pytest.raises(p.BadLengthError):
        p.encode_write(0x20, 0, bytes(p.MAX_DATA + 1))
    with pytest.raises(ValueError, match="address"):
        p.encode_read(0x78, 0, 1)


def test_response_decoding_finds_every_kind_of_error() -> None:
    good = p.encode_response(0x20, p.OK, 8, b"\x01\x02")
    assert p.decode_response(good, 0x20, p.READ, 8, 2) == b"\x01\x02"
    # Padding after the frame (the target clocks out 0xFF) is ignored.
    assert p.decode_response(good + b"\xff\xff", 0x20, p.READ, 8, 2) == b"\x01\x02"
    flipped = bytearray(good)
    flipped[5] ^= 1
    cases: list[tuple[bytes, type[p.I2CError]]] = [
        (bytes(flipped), p.CrcError),
        (good[:4], p.BadLengthError),
        (good[:7], p.BadLengthError),
        (p.encode_response(0x21, p.OK, 8, b"\x01\x02"), p.BadFrameError),
        (p.encode_response(0x20, p.OK, 9, b"\x01\x02"), p.BadFrameError),
        (p.encode_response(0x20, p.BAD_CRC, 8), p.CrcError),
        (p.encode_response(0x20, 0x7E, 8), p.BadFrameError),
        (p.encode_response(0x20, p.READ_ONLY, 8), p.NackError),
    ]
    for frame, error in cases:
        with pytest.raises(error):
            p.decode_response(frame, 0x20, p.READ, 8, 2)
    assert not p.NackError(p.READ_ONLY).retryable
    assert p.CrcError().retryable
    assert str(p.NackError(p.READ_ONLY, 0x20)) == "nack from 0x20: read_only"


# --- the client against real slaves ---------------------------------------------------------


@pytest.fixture
def bus(family: params.Family) -> SimBus:
    sim = SimBus(SimClock())
    for node, _, _ in family.slaves():
        sim.attach(Slave(family, node))
    return sim


@pytest.fixture
def client(bus: SimBus, family: params.Family) -> p.Client:
    master = p.Client(bus, p.RetryPolicy(retries=2, probe_ms=5000))
    for node, address, _ in family.slaves():
        master.add(node, address)
    return master


def test_read_and_write_registers_of_two_slaves(
    bus: SimBus, client: p.Client, family: params.Family
) -> None:
    meter = bus.slaves[METER]
    assert isinstance(meter, Slave)
    meter.set("energy_wh", 123456.0)
    meter.set("power_w", 7360.5)
    block = client.read(METER, 0, 8, 0)
    assert family.params["energy_wh"].decode(block, 0) == 123456.0
    assert family.params["power_w"].decode(block, 4) == 7360.5
    client.write(RELAY, 0xF0, b"\x01", 0)
    relay = bus.slaves[RELAY]
    assert isinstance(relay, Slave)
    assert relay.get_private("contactor_cmd") == 1


def test_slave_refusals_are_nacks_and_do_not_mark_it_offline(client: p.Client) -> None:
    with pytest.raises(p.NackError) as caught:
        client.write(METER, 0, b"\x00\x00\x00\x01", 0)  # energy_wh: telemetry, read-only
    assert caught.value.status == p.READ_ONLY
    with pytest.raises(p.NackError) as caught:
        client.read(METER, 0x200, 4, 0)
    assert caught.value.status == p.BAD_REGISTER
    assert client.slaves[METER].online
    assert client.transitions == []
    assert client.slaves[METER].errors == {"nack": 2}


def test_a_corrupted_frame_is_retried_and_counted(bus: SimBus, client: p.Client) -> None:
    bus.corrupt_next(1, METER)
    assert len(client.read(METER, 0, 4, 0)) == 4
    bus.corrupt_next(1, METER, side="request")  # the slave sees the noise and says so
    assert len(client.read(METER, 0, 4, 0)) == 4
    assert client.slaves[METER].errors == {"crc_error": 2}
    assert client.slaves[METER].online
    assert bus.corrupted == 2


def test_retries_exhausted_mark_the_slave_offline_until_a_probe_succeeds(
    bus: SimBus, client: p.Client
) -> None:
    bus.silence(RELAY)
    with pytest.raises(p.NoAnswerError):
        client.read(RELAY, 0, 5, 1000)
    slave = client.slaves[RELAY]
    assert not slave.online
    assert slave.errors == {"no_answer": 3}  # one attempt and two retries
    assert client.transitions == [("relay", False, "no_answer")]
    # While offline, no bus time is spent on it until the next probe is due.
    assert not client.ready(RELAY, 5999)
    assert client.ready(RELAY, 6000)
    with pytest.raises(p.NoAnswerError):
        client.read(RELAY, 0, 5, 6000)  # a probe: a single attempt
    assert slave.errors == {"no_answer": 4}
    bus.restore(RELAY)
    assert client.ready(RELAY, 11000)
    assert len(client.read(RELAY, 0, 5, 11000)) == 5
    assert slave.online
    assert client.transitions[-1] == ("relay", True, None)
    # The other slave never noticed.
    assert client.slaves[METER].online


def test_noise_longer_than_the_retries_takes_the_slave_offline(
    bus: SimBus, client: p.Client
) -> None:
    bus.corrupt_next(3, METER)
    with pytest.raises(p.CrcError):
        client.read(METER, 0, 4, 0)
    assert client.transitions == [("meter", False, "crc_error")]
