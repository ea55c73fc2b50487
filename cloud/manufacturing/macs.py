"""MAC addresses and hardware IDs as values: parsing, formatting, ranges. I/O-free."""

from __future__ import annotations

import re

from cloud.manufacturing import MacPoolError, ManufacturingError

MAC_BITS = 48
MAX_MAC = (1 << MAC_BITS) - 1
# The largest block IEEE registers (MA-L, an OUI: 2**24 addresses); a pool is at most that.
MAX_POOL_SIZE = 1 << 24
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")
_HEX_ID = re.compile(r"^[0-9a-f]{2,32}$")


def parse_mac(text: str, field: str = "mac") -> int:
    """The 48-bit integer of ``AA:BB:CC:DD:EE:FF`` (or ``-``, or no separator)."""
    if not isinstance(text, str) or not _MAC.match(text):
        raise MacPoolError(f"not a MAC address: {text!r} (e.g. 24:0A:C4:12:34:56)", field)
    return int(re.sub(r"[:-]", "", text), 16)


def format_mac(value: int) -> str:
    """``AA:BB:CC:DD:EE:FF``: the registry's notation (devices.mac)."""
    digits = f"{value:012X}"
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def check_unicast(value: int, field: str = "mac") -> None:
    """Refuse a group (multicast/broadcast) or all-zero address: no NIC may carry one."""
    if value == 0 or (value >> 40) & 0x01:
        raise MacPoolError(
            f"{format_mac(value)} is not an individual (unicast) address: the first octet's "
            "lowest bit must be 0",
            field,
        )


def parse_range(first: str, last: str | None, size: int | None) -> tuple[int, int]:
    """(first, last) of a pool given as first..last or first + size; MacPoolError naming the
    field otherwise."""
    start = parse_mac(first, "first")
    if (last is None) == (size is None):
        raise MacPoolError("give either last or size", "last" if last is not None else "size")
    if size is not None:
        if size < 1 or size > MAX_POOL_SIZE:
            raise MacPoolError(f"size must be 1..{MAX_POOL_SIZE} (an OUI block)", "size")
        end = start + size - 1
        if end > MAX_MAC:
            raise MacPoolError("the range runs past FF:FF:FF:FF:FF:FF", "size")
    else:
        end = parse_mac(str(last), "last")  # not None: the check above
        if end < start:
            raise MacPoolError("last is before first", "last")
        if end - start + 1 > MAX_POOL_SIZE:
            raise MacPoolError(f"at most {MAX_POOL_SIZE} addresses (an OUI block)", "last")
    check_unicast(start, "first")
    # Every address of the range must be unicast: the group bit is in the first octet, so a
    # range whose ends share it and stay inside one first octet is clean; else refuse.
    if start >> 40 != end >> 40:
        raise MacPoolError("a pool stays inside one first octet (one OUI)", "last")
    return start, end


def hardware_id(text: str, field: str) -> str:
    """A chip or slave unique id as the board reports it: lowercase hex, 2-32 digits; ``:`` and
    ``-`` separators (a MAC-style id) are dropped."""
    if not isinstance(text, str):
        raise ManufacturingError("a hex string", field, "bad_hardware_id")
    value = re.sub(r"[:-]", "", text).lower()
    if not _HEX_ID.match(value) or len(value) % 2:
        raise ManufacturingError(
            f"not a hardware id: {text!r} (2 to 32 hex digits, whole bytes)",
            field,
            "bad_hardware_id",
        )
    return value
