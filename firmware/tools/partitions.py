"""The flash layout ampfleet assumes on a 4 MiB ESP32-C3: where esptool writes what.

The MicroPython image for the board must be built with the same table (``partition_csv()`` is
the CSV its board definition uses); docs/manufacturing.md draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.tools import ToolError

CHIP = "esp32c3"
FLASH_SIZE = 0x400000  # 4 MiB: ESP32-C3-MINI-1 and -WROOM-02 modules
# The ESP32-C3 ROM loads the second-stage bootloader from 0x0 (the original ESP32: 0x1000); the
# ESP-IDF default puts the partition table at 0x8000, right after the bootloader.
BOOTLOADER_OFFSET = 0x0
PARTITION_TABLE_OFFSET = 0x8000
SECTOR = 0x1000  # flash erase unit: data partitions are aligned to it
APP_ALIGN = 0x10000  # app partitions are mapped through the MMU in 64 KiB pages


@dataclass(frozen=True)
class Partition:
    """One row of the partition table."""

    name: str
    type: str
    subtype: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        """The first byte after the partition."""
        return self.offset + self.size


# nvs holds the per-device credentials (``nvs``); otadata picks ota_0 or ota_1 (blank: ota_0);
# vfs is the MicroPython filesystem (LittleFS, found by its label "vfs"), where the bundle goes.
# The apps are as large as in MicroPython's own 4 MiB OTA table, so its ESP32_GENERIC_C3 build
# fits; 0x11000-0x20000 is left free because ota_0 has to start on a 64 KiB boundary.
LAYOUT: tuple[Partition, ...] = (
    Partition("nvs", "data", "nvs", 0x9000, 0x6000),
    Partition("otadata", "data", "ota", 0xF000, 0x2000),
    Partition("phy_init", "data", "phy", 0x11000, 0x1000),
    Partition("ota_0", "app", "ota_0", 0x20000, 0x180000),
    Partition("ota_1", "app", "ota_1", 0x1A0000, 0x180000),
    Partition("vfs", "data", "fat", 0x320000, 0xE0000),
)


def partition(name: str) -> Partition:
    """The partition called ``name``; ToolError when the layout has none."""
    for part in LAYOUT:
        if part.name == name:
            return part
    raise ToolError(f"no partition {name!r} in the layout")


def partition_csv() -> str:
    """The layout as an ESP-IDF partition table CSV (for the MicroPython board definition)."""
    lines = ["# Name,   Type, SubType, Offset,   Size"]
    for part in LAYOUT:
        lines.append(
            f"{part.name + ',':<9} {part.type + ',':<5} {part.subtype + ',':<8} "
            f"{part.offset:#08x}, {part.size:#08x}"
        )
    return "\n".join(lines) + "\n"
