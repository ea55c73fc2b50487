"""The esptool command lines that flash a board and read its MAC, as lists of arguments.

Nothing here opens a serial port: the commands are built and checked (files fit their
partitions, a MicroPython image carries our partition table), and the caller runs or prints
them. They run as ``python -m esptool`` so that the pinned esptool of this environment is used.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from firmware.tools import ToolError
from firmware.tools.partitions import (
    BOOTLOADER_OFFSET,
    CHIP,
    LAYOUT,
    PARTITION_TABLE_OFFSET,
    partition,
)

DEFAULT_BAUD = 460800
_TABLE_ENTRY = struct.Struct("<2sBBII16sI")  # ESP-IDF gen_esp32part.py, one 32-byte row
_TABLE_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
# esptool's read-mac prints "MAC:" (and "BASE MAC:" on chips with an EUI-64) then the address.
_MAC_LINE = re.compile(r"^(BASE MAC|MAC):\s*((?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2})\s*$", re.M)


@dataclass(frozen=True)
class Write:
    """One file esptool writes, at its flash offset."""

    offset: int
    file: Path


def esptool(port: str, baud: int, *args: str) -> list[str]:
    """A full ``python -m esptool`` command line for our chip on ``port``."""
    return [
        sys.executable,
        "-m",
        "esptool",
        "--chip",
        CHIP,
        "--port",
        port,
        "--baud",
        str(baud),
        *args,
    ]


def flash_commands(
    port: str,
    baud: int,
    *,
    nvs: Path | None = None,
    vfs: Path | None = None,
    micropython: Path | None = None,
    erase: bool = False,
) -> list[list[str]]:
    """The esptool runs that write the given images, in order; ToolError when one does not
    fit where it goes.

    The MicroPython image is written alone and first: it is the merged bootloader + partition
    table + app, padded with 0xFF over nvs and otadata, so esptool would refuse it in one run
    with the NVS image (overlap), and the NVS must land after it.
    """
    if nvs is None and vfs is None and micropython is None and not erase:
        raise ToolError("nothing to flash: give --nvs, --bundle, --micropython or --erase")
    commands = []
    if erase:
        commands.append(esptool(port, baud, "erase-flash"))
    if micropython is not None:
        check_micropython_image(micropython.read_bytes(), str(micropython))
        commands.append(esptool(port, baud, "write-flash", *_pairs([Write(0, micropython)])))
    writes = []
    if nvs is not None:
        writes.append(_fitting(nvs, "nvs"))
    if vfs is not None:
        writes.append(_fitting(vfs, "vfs"))
    if writes:
        commands.append(esptool(port, baud, "write-flash", *_pairs(writes)))
    return commands


def mac_command(port: str, baud: int) -> list[str]:
    """The esptool run that prints the chip's MAC address."""
    return esptool(port, baud, "read-mac")


def parse_mac(output: str) -> str:
    """The base MAC address in esptool's read-mac output; ToolError when there is none."""
    found = dict((label, mac) for label, mac in _MAC_LINE.findall(output))
    mac = found.get("BASE MAC") or found.get("MAC")
    if mac is None:
        raise ToolError("esptool printed no MAC address")
    return mac


def read_table(image: bytes, offset: int = PARTITION_TABLE_OFFSET) -> list[tuple[str, int, int]]:
    """(label, offset, size) of each partition in the table found at ``offset`` of ``image``."""
    rows = []
    position = offset
    while position + _TABLE_ENTRY.size <= len(image):
        magic, _type, _subtype, start, size, label, _flags = _TABLE_ENTRY.unpack_from(
            image, position
        )
        if magic != _TABLE_MAGIC:  # 0xFFFF ends the table; 0xEBEB is its MD5 row
            break
        rows.append((label.rstrip(b"\0").decode(errors="replace"), start, size))
        position += _TABLE_ENTRY.size
    return rows


def check_micropython_image(image: bytes, name: str) -> None:
    """ToolError unless ``image`` is a merged image whose partition table is ours: a stock
    MicroPython build puts vfs elsewhere, and the bundle would land in its app."""
    if image[BOOTLOADER_OFFSET : BOOTLOADER_OFFSET + 1] != b"\xe9":
        raise ToolError(f"{name}: not an ESP32 image (no 0xE9 header at 0x0)")
    table = read_table(image)
    if not table:
        raise ToolError(
            f"{name}: no partition table at {PARTITION_TABLE_OFFSET:#x}; give the merged "
            "image (bootloader + partition table + app, MicroPython's firmware.bin)"
        )
    expected = [(p.name, p.offset, p.size) for p in LAYOUT]
    if table != expected:
        raise ToolError(
            f"{name}: its partition table differs from ampfleet's (`ampfleet firmware "
            f"partitions`): {_describe(table)}"
        )
    app_end = partition("ota_0").end
    if len(image) > app_end:
        raise ToolError(f"{name}: {len(image)} bytes run past ota_0 (ends at {app_end:#x})")


def _fitting(file: Path, name: str) -> Write:
    """The write of ``file`` over the whole partition ``name``: its size must be the
    partition's, or pages of a previous content would survive behind it."""
    part = partition(name)
    size = file.stat().st_size
    if size != part.size:
        raise ToolError(
            f"{file}: {size:#x} bytes, but the {name} partition is {part.size:#x} bytes "
            f"(at {part.offset:#x})"
        )
    return Write(part.offset, file)


def _pairs(writes: list[Write]) -> list[str]:
    return [item for w in writes for item in (f"{w.offset:#x}", str(w.file))]


def _describe(table: list[tuple[str, int, int]]) -> str:
    return ", ".join(f"{label}@{start:#x}+{size:#x}" for label, start, size in table)
