"""``ampfleet firmware flash``, ``mac`` and ``partitions`` without a board: the exact esptool
command lines, the images they write, and what esptool itself accepts offline."""

from __future__ import annotations

import hashlib
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import esptool
import pytest
from click.testing import CliRunner
from littlefs import LittleFS

from cloud.cli import main
from firmware.tools import ToolError, flashing, nvs, vfs
from firmware.tools.partitions import FLASH_SIZE, LAYOUT, partition, partition_csv
from tests.tools import build, small_tree

ROOT = Path(__file__).resolve().parents[2]
PORT = "/dev/ttyUSB0"
ESPTOOL = [sys.executable, "-m", "esptool", "--chip", "esp32c3", "--port", PORT]


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    source, schemas = small_tree(tmp_path)
    result = build(source, schemas, tmp_path / "dist", "--version", "1.0.0")
    assert result.exit_code == 0, result.output
    return tmp_path / "dist" / "firmware-1.0.0.tar.gz"


@pytest.fixture
def nvs_bin(tmp_path: Path) -> Path:
    content = nvs.DeviceNvs("af-1", "a-password", "mqtts://mqtt.example.com")
    path = tmp_path / "af-1.bin"
    path.write_bytes(nvs.partition(nvs.csv_text(content), 0x6000))
    return path


def merged_micropython(table: list[tuple[str, int, int]], app_size: int = 0x1000) -> bytes:
    """A merged image as MicroPython's build writes it: bootloader at 0x0, partition table
    (ESP-IDF binary format, MD5 row, 0xFF) at 0x8000, app at ota_0/factory, 0xFF between."""
    image = bytearray(b"\xff" * (0x20000 + app_size))
    image[0:16] = b"\xe9" + bytes(15)  # an image header starts with 0xE9
    rows = b""
    for label, offset, size in table:
        kind = 0x00 if label.startswith(("ota_", "factory")) else 0x01
        rows += struct.pack("<2sBBII16sI", b"\xaa\x50", kind, 0, offset, size, label.encode(), 0)
    rows += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(rows).digest()  # noqa: S324 - the format's
    image[0x8000 : 0x8000 + len(rows)] = rows
    image[0x20000:0x20001] = b"\xe9"
    return bytes(image)


OURS = [(p.name, p.offset, p.size) for p in LAYOUT]


def test_the_layout_is_sound() -> None:
    assert (partition("nvs").offset, partition("nvs").size) == (0x9000, 0x6000)
    ends = 0x9000  # bootloader 0x0, partition table 0x8000-0x9000
    for part in LAYOUT:
        assert part.offset >= ends, f"{part.name} overlaps what comes before"
        assert part.offset % (0x10000 if part.type == "app" else 0x1000) == 0, part.name
        ends = part.end
    assert ends <= FLASH_SIZE


def test_partitions_command_and_the_docs_show_the_layout() -> None:
    result = CliRunner().invoke(main, ["firmware", "partitions"])
    assert result.exit_code == 0 and result.output == partition_csv()
    assert partition_csv() in (ROOT / "docs" / "manufacturing.md").read_text()


@pytest.mark.parametrize("command", ["", "partitions", "build", "nvs", "flash", "mac"])
def test_the_docs_show_every_commands_help(command: str) -> None:
    args = ["firmware", *([command] if command else []), "--help"]
    result = CliRunner().invoke(main, args, prog_name="ampfleet")
    assert result.exit_code == 0
    docs = (ROOT / "docs" / "manufacturing.md").read_text()
    assert f"```text\n{result.output}```" in docs, "docs/manufacturing.md: paste the new --help"


def test_flash_dry_run_prints_the_exact_command_lines(
    archive: Path, nvs_bin: Path, tmp_path: Path
) -> None:
    image = tmp_path / "micropython.bin"
    image.write_bytes(merged_micropython(OURS))
    args = ["firmware", "flash", "--port", PORT, "--nvs", str(nvs_bin), "--bundle", str(archive)]
    result = CliRunner().invoke(main, [*args, "--micropython", str(image), "--erase", "--dry-run"])
    assert result.exit_code == 0, result.output
    fs_image = tmp_path / "dist" / "firmware-1.0.0.vfs.bin"
    assert result.output.splitlines() == [
        shlex.join([*ESPTOOL, "--baud", "460800", "erase-flash"]),
        shlex.join([*ESPTOOL, "--baud", "460800", "write-flash", "0x0", str(image)]),
        shlex.join(
            [
                *ESPTOOL,
                *("--baud", "460800", "write-flash"),
                *("0x9000", str(nvs_bin), "0x320000", str(fs_image)),
            ]
        ),
    ]
    slow = CliRunner().invoke(main, [*args, "--baud", "115200", "--dry-run"])
    assert slow.output.splitlines() == [
        shlex.join(
            [
                *ESPTOOL,
                *("--baud", "115200", "write-flash"),
                *("0x9000", str(nvs_bin), "0x320000", str(fs_image)),
            ]
        )
    ]


def test_the_bundle_becomes_the_littlefs_image_of_vfs(archive: Path) -> None:
    result = CliRunner().invoke(
        main, ["firmware", "flash", "--port", PORT, "--bundle", str(archive), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    data = (archive.parent / "firmware-1.0.0.vfs.bin").read_bytes()
    assert len(data) == partition("vfs").size
    # mounted with MicroPython's own LittleFS settings, as the board does
    fs = LittleFS(
        block_size=vfs.BLOCK_SIZE,
        block_count=len(data) // vfs.BLOCK_SIZE,
        read_size=vfs.READ_SIZE,
        prog_size=vfs.PROG_SIZE,
        lookahead_size=vfs.LOOKAHEAD_SIZE,
        mount=False,
    )
    fs.context.buffer[:] = data
    fs.mount()
    directory = archive.parent / "firmware-1.0.0"
    for path in directory.rglob("*"):
        if path.is_file():
            name = str(path.relative_to(directory))
            with fs.open(name, "rb") as handle:
                assert handle.read() == path.read_bytes(), name
    assert sorted(fs.listdir("/")) == ["firmware", "main.py", "manifest.json", "parameters"]


def test_esptool_runs_and_merges_our_images_at_their_offsets(
    archive: Path, nvs_bin: Path, tmp_path: Path
) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "esptool", "version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and esptool.__version__ in version.stdout

    fs_image = tmp_path / "fs.bin"
    fs_image.write_bytes(vfs.image({"main.py": b"print(1)\n"}, partition("vfs").size))
    (command,) = flashing.flash_commands(PORT, 460800, nvs=nvs_bin, vfs=fs_image)
    pairs = command[command.index("write-flash") + 1 :]
    merged = tmp_path / "merged.bin"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "esptool",
            "--chip",
            "esp32c3",
            "merge-bin",
            "-o",
            str(merged),
            *pairs,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    flash = merged.read_bytes()
    assert len(flash) == FLASH_SIZE  # vfs ends the flash
    assert flash[0x9000:0xF000] == nvs_bin.read_bytes()
    assert flash[0x320000:] == fs_image.read_bytes()
    assert set(flash[:0x9000]) == {0xFF}  # untouched: the bootloader and the table stay


def test_images_that_do_not_fit_are_refused(nvs_bin: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.bin"
    small.write_bytes(nvs_bin.read_bytes()[:0x4000])
    result = CliRunner().invoke(main, ["firmware", "flash", "--port", PORT, "--nvs", str(small)])
    assert result.exit_code == 1 and "the nvs partition is 0x6000 bytes" in result.output

    stock = tmp_path / "stock.bin"  # MicroPython's own 4 MiB table: factory app, vfs elsewhere
    stock.write_bytes(
        merged_micropython(
            [
                ("nvs", 0x9000, 0x6000),
                ("phy_init", 0xF000, 0x1000),
                ("factory", 0x10000, 0x1F0000),
                ("vfs", 0x200000, 0x200000),
            ]
        )
    )
    result = CliRunner().invoke(
        main, ["firmware", "flash", "--port", PORT, "--micropython", str(stock), "--dry-run"]
    )
    assert result.exit_code == 1 and "partition table differs" in result.output
    app_only = tmp_path / "micropython-app.bin"
    app_only.write_bytes(b"\xe9" + bytes(0x9000))
    result = CliRunner().invoke(
        main, ["firmware", "flash", "--port", PORT, "--micropython", str(app_only)]
    )
    assert result.exit_code == 1 and "no partition table at 0x8000" in result.output
    nothing = CliRunner().invoke(main, ["firmware", "flash", "--port", PORT])
    assert nothing.exit_code == 1 and "nothing to flash" in nothing.output


# What esptool 5's read-mac prints (log.print(f"{label + ':':<20}{mac}")), after connecting.
READ_MAC_C3 = """esptool v5.6.0
Connected to ESP32-C3 on /dev/ttyUSB0:
Chip type:          ESP32-C3 (QFN32) (revision v0.4)
Features:           Wi-Fi, BT 5 (LE), Single Core, 160MHz, Embedded Flash 4MB (GD)
MAC:                58:cf:79:0a:1b:2c

Stub flasher running.

MAC:                58:cf:79:0a:1b:2c

Hard resetting via RTS pin...
"""
READ_MAC_EUI64 = """MAC:                60:55:f9:ff:fe:0a:1b:2c
BASE MAC:           60:55:f9:0a:1b:2c
MAC_EXT:            ff:fe
"""


def test_the_mac_is_read_from_esptools_output() -> None:
    assert flashing.parse_mac(READ_MAC_C3) == "58:cf:79:0a:1b:2c"
    assert flashing.parse_mac(READ_MAC_EUI64) == "60:55:f9:0a:1b:2c"
    with pytest.raises(ToolError, match="no MAC"):
        flashing.parse_mac("A fatal error occurred: Failed to connect to ESP32-C3")


def test_mac_dry_run_and_without_a_board(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["firmware", "mac", "--port", PORT, "--dry-run"])
    assert result.exit_code == 0
    assert result.output == shlex.join([*ESPTOOL, "--baud", "460800", "read-mac"]) + "\n"

    missing = str(tmp_path / "no-such-port")
    result = CliRunner().invoke(main, ["firmware", "mac", "--port", missing])
    assert result.exit_code == 1, result.output
    assert "esptool failed (exit 2)" in result.stderr and result.stdout == ""
    assert "Traceback" not in result.output
