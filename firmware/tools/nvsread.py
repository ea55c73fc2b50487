"""Reading an ESP-IDF NVS partition back: what a device finds in its NVS, for the host simulator
that runs an enrolled simulated board (firmware/host/boards.py) and for checks on the line.

Written from the layout ESP-IDF documents ("Non-Volatile Storage Library", internals): pages of
4096 bytes, each a 32-byte header, a 32-byte bitmap of 2 bits per entry (0b10 written) and 126
entries of 32 bytes. CRCs are checked, as the device does; multi-page blobs (BLOB_DATA chunks
listed by a BLOB_IDX entry) are joined. Only what ``firmware.tools.nvs`` writes is read:
namespaces, blobs, strings.
"""

from __future__ import annotations

import struct
import zlib

from firmware.tools import ToolError

PAGE = 4096
ENTRY = 32
ENTRIES = 126
FIRST_ENTRY = 64
ACTIVE, FULL = 0xFFFFFFFE, 0xFFFFFFFC
U8, SZ, BLOB_DATA, BLOB_IDX = 0x01, 0x21, 0x42, 0x48
WRITTEN = 0b10


def _crc(data: bytes) -> int:
    return zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF


def read(partition: bytes) -> dict[tuple[str, str], bytes]:
    """Every (namespace, key) of an NVS partition image and its value; ToolError on damage."""
    if len(partition) % PAGE:
        raise ToolError("an NVS partition is a whole number of 4096-byte pages")
    namespaces: dict[int, str] = {}
    chunks: dict[tuple[int, str], dict[int, bytes]] = {}
    indexes: dict[tuple[int, str], tuple[int, int, int]] = {}
    strings: dict[tuple[int, str], bytes] = {}
    for start in range(0, len(partition), PAGE):
        page = partition[start : start + PAGE]
        if struct.unpack_from("<I", page)[0] not in (ACTIVE, FULL):
            continue  # empty, or the reserved page
        if struct.unpack_from("<I", page, 28)[0] != _crc(page[4:28]):
            raise ToolError(f"NVS page at {start:#x}: bad header CRC")
        bitmap = page[32:64]
        i = 0
        while i < ENTRIES:
            if (bitmap[i // 4] >> (i % 4 * 2)) & 0b11 != WRITTEN:
                i += 1
                continue
            entry = page[FIRST_ENTRY + i * ENTRY : FIRST_ENTRY + (i + 1) * ENTRY]
            ns, kind, span, chunk = entry[0], entry[1], entry[2], entry[3]
            if struct.unpack_from("<I", entry, 4)[0] != _crc(entry[0:4] + entry[8:32]):
                raise ToolError(f"NVS page at {start:#x}: bad entry CRC")
            key = entry[8:24].rstrip(b"\0").decode()
            if ns == 0 and kind == U8:
                namespaces[entry[24]] = key
            elif kind in (SZ, BLOB_DATA):
                size, data_crc = struct.unpack_from("<H2xI", entry, 24)
                data_at = FIRST_ENTRY + (i + 1) * ENTRY
                data = page[data_at : data_at + size]
                if _crc(data) != data_crc:
                    raise ToolError(f"NVS value {key}: bad data CRC")
                if kind == SZ:
                    strings[(ns, key)] = data.rstrip(b"\0")
                else:
                    chunks.setdefault((ns, key), {})[chunk] = data
            elif kind == BLOB_IDX:
                indexes[(ns, key)] = struct.unpack_from("<IBB", entry, 24)
            i += max(span, 1)
    found: dict[tuple[str, str], bytes] = {}
    try:
        for (ns, key), (size, count, first) in indexes.items():
            value = b"".join(chunks[(ns, key)][first + n] for n in range(count))
            if len(value) != size:
                raise ToolError(f"NVS blob {key}: {len(value)} bytes of {size}")
            found[(namespaces[ns], key)] = value
        for (ns, key), value in strings.items():
            found[(namespaces[ns], key)] = value
    except KeyError as exc:
        raise ToolError(f"NVS partition incomplete: {exc}") from exc
    return found
