"""Slave registers that are firmware, not schema: how the master drives the relay board.

The parameter schema (parameters/build/<family>.json) declares what the cloud sees: telemetry,
status and commands, some bound to slave registers. Charging control needs more than the cloud
sees — a contactor command, the raw control-pilot voltage — so the relay slave keeps a private
block at 0xF0, above every schema register (schemas use the low registers; the compiler's
overlap check never sees these, so they are kept out of the way by convention).

Each entry: name -> (register, width, signed, writable). Values are big-endian integers.
"""

CONTROL_BASE = 0xF0

# Relay slave (role "relay").
CONTACTOR_CMD = "contactor_cmd"  # 1 = close, 0 = open; refreshed by the master every cycle
CP_HIGH_DV = "cp_high_dv"  # high level of the control pilot, 0.1 V (IEC 61851-1 A.4 states)
CP_LOW_DV = "cp_low_dv"  # low level while PWM runs: -12 V, else the EV's diode is missing

RELAY = {
    CONTACTOR_CMD: (0xF0, 1, False, True),
    CP_HIGH_DV: (0xF1, 2, True, False),
    CP_LOW_DV: (0xF3, 2, True, False),
}
RELAY_BLOCK = (0xF0, 5)  # one read covers the whole private block

# Without a contactor command for this long the relay opens on its own: a master that hangs
# or loses the bus must not leave the contactor closed (fail-safe, IEC 61851-1 6.3.1).
CONTACTOR_WATCHDOG_MS = 3000

PRIVATE = {"relay": RELAY}

# Every slave, whatever its role: its MCU's unique id (machine.unique_id(), the ESP32-C3's 6-byte
# factory MAC, the address esptool read-mac prints), read-only. The master reads it from every
# slave at boot and announces the set in its status (contract 4.2 ``hw``): the cloud compares
# it with the set bound at enrollment, so a swapped board is seen.
UNIQUE_ID = "unique_id"
UNIQUE_ID_BYTES = 6
IDENTITY = {UNIQUE_ID: (0xF8, UNIQUE_ID_BYTES, False, False)}
IDENTITY_BLOCK = (0xF8, UNIQUE_ID_BYTES)


def hex_id(data: "bytes | bytearray") -> str:
    """A unique id as the contract writes it: lowercase hex, two digits per byte."""
    return "".join(f"{byte:02x}" for byte in data)


def to_signed(raw: int, width: int) -> int:
    """Two's complement of a ``width``-byte unsigned integer (MicroPython's from_bytes
    ignores the signed flag, so this is done by hand everywhere)."""
    bits = width * 8
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


def unpack(block: "bytes | bytearray", base: int, entry: "tuple[int, int, bool, bool]") -> int:
    """The integer value of one private register inside a block read from ``base``."""
    register, width, signed, _ = entry
    start = register - base
    raw = int.from_bytes(block[start : start + width], "big")
    return to_signed(raw, width) if signed else raw


def pack(value: int, width: int) -> bytes:
    """``value`` as ``width`` big-endian bytes (two's complement when negative)."""
    return (value & ((1 << (width * 8)) - 1)).to_bytes(width, "big")
