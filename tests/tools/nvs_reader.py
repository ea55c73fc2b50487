"""A small reader of ESP-IDF NVS partitions, to check without a board what a device will find.

Written from the layout ESP-IDF documents ("Non-Volatile Storage Library", internals): pages of
4096 bytes, each a 32-byte header, a 32-byte bitmap of 2 bits per entry (0b11 empty, 0b10
written, 0b00 erased) and 126 entries of 32 bytes. It checks every CRC, as the device does,
and joins multi-page blobs (BLOB_DATA chunks listed by a BLOB_IDX entry).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PAGE = 4096
ENTRY = 32
ENTRIES = 126
FIRST_ENTRY = 64
ACTIVE, FULL = 0xFFFFFFFE, 0xFFFFFFFC
U8, SZ, BLOB, BLOB_DATA, BLOB_IDX = 0x01, 0x21, 0x41, 0x42, 0x48
WRITTEN = 0b10


@dataclass(frozen=True)
class Item:
    """One key as the device reads it."""

    kind: str  # "blob" or "str" (MicroPython's esp32.NVS reads only blobs and i32)
    value: bytes


def _crc(data: bytes) -> int:
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def read(partition: bytes) -> dict[tuple[str, str], Item]:
    """Every (namespace, key) of an NVS partition image."""
    assert len(partition) % PAGE == 0
    namespaces: dict[int, str] = {}
    chunks: dict[tuple[int, str], dict[int, bytes]] = {}
    indexes: dict[tuple[int, str], tuple[int, int, int]] = {}
    strings: dict[tuple[int, str], bytes] = {}
    for start in range(0, len(partition), PAGE):
        page = partition[start : start + PAGE]
        state = struct.unpack_from("<I", page)[0]
        if state not in (ACTIVE, FULL):
            continue  # empty, or the reserved page
        assert struct.unpack_from("<I", page, 28)[0] == _crc(page[4:28]), "page header CRC"
        bitmap = page[32:64]
        i = 0
        while i < ENTRIES:
            if (bitmap[i // 4] >> (i % 4 * 2)) & 0b11 != WRITTEN:
                i += 1
                continue
            entry = page[FIRST_ENTRY + i * ENTRY : FIRST_ENTRY + (i + 1) * ENTRY]
            ns, kind, span, chunk = entry[0], entry[1], entry[2], entry[3]
            assert struct.unpack_from("<I", entry, 4)[0] == _crc(entry[0:4] + entry[8:32])
            key = entry[8:24].rstrip(b"\0").decode()
            if ns == 0 and kind == U8:
                namespaces[entry[24]] = key
            elif kind in (SZ, BLOB_DATA):
                size, data_crc = struct.unpack_from("<H2xI", entry, 24)
                data_at = FIRST_ENTRY + (i + 1) * ENTRY
                data = page[data_at : data_at + size]
                assert _crc(data) == data_crc, f"data CRC of {key}"
                if kind == SZ:
                    strings[(ns, key)] = data
                else:
                    chunks.setdefault((ns, key), {})[chunk] = data
            elif kind == BLOB_IDX:
                indexes[(ns, key)] = struct.unpack_from("<IBB", entry, 24)
            i += span
    found = {}
    for (ns, key), (size, count, first) in indexes.items():
        value = b"".join(chunks[(ns, key)][first + n] for n in range(count))
        assert len(value) == size
        found[(namespaces[ns], key)] = Item("blob", value)
    for (ns, key), value in strings.items():
        found[(namespaces[ns], key)] = Item("str", value.rstrip(b"\0"))
    return found
