"""The MicroPython filesystem of a board as a flashable image: LittleFS v2 holding a bundle.

MicroPython's esp32 port mounts the partition labelled "vfs" at boot and detects LittleFS on
it; the image here is made with the geometry and settings MicroPython itself uses, so the board
mounts it as if it had formatted it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from firmware.tools import ToolError

BLOCK_SIZE = 4096  # esp32.Partition reports the flash sector as the block size
# MicroPython's VfsLfs2 defaults (extmod/vfs_lfs.c): readsize=32, progsize=32, lookahead=32.
READ_SIZE = PROG_SIZE = LOOKAHEAD_SIZE = 32
BLOCK_CYCLES = 100
# On-disk version 2.0: readable by every littlefs 2.x, so also by MicroPython 1.20-1.22, whose
# littlefs (2.5) predates disk version 2.1.
DISK_VERSION = 0x00020000


def image(files: Mapping[str, bytes], size: int) -> bytes:
    """A LittleFS image of ``size`` bytes holding ``files`` (POSIX paths, parents created)."""
    from littlefs import LittleFS, LittleFSError

    if size <= 0 or size % BLOCK_SIZE:
        raise ToolError(f"filesystem size {size:#x} is not a positive multiple of {BLOCK_SIZE}")
    fs = LittleFS(
        block_size=BLOCK_SIZE,
        block_count=size // BLOCK_SIZE,
        read_size=READ_SIZE,
        prog_size=PROG_SIZE,
        lookahead_size=LOOKAHEAD_SIZE,
        block_cycles=BLOCK_CYCLES,
        disk_version=DISK_VERSION,
    )
    try:
        for path in sorted(files):
            parent = str(PurePosixPath(path).parent)
            if parent != ".":
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as handle:
                handle.write(files[path])
    except LittleFSError as exc:
        total = sum(len(data) for data in files.values())
        raise ToolError(
            f"{len(files)} files ({total} bytes) do not fit a {size:#x}-byte filesystem: {exc}"
        ) from exc
    return bytes(fs.context.buffer)
