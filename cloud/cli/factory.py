"""``ampfleet factory``: enroll a board on the factory line (docs/manufacturing.md).

The station reads the chip's MAC (its unique id) with esptool, and each slave MCU's on its own
port, makes the device's key and CSR (or has the board make them), enrolls it with
``POST /api/v1/enrollment`` as an API client (client-credentials grant, role factory-station),
writes the answer into the board's NVS partition and, with ``--flash``, flashes it. The station
core is ``firmware.tools.station``; this module is the shell: options, HTTP, files, processes.
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

from cloud.cli.firmware import _run, _vfs_image, _write_private
from firmware.tools import ToolError, flashing, nvs, station
from firmware.tools.station import Esptool, KeyOnBoard

_TIMEOUT = 30


@click.group()
def factory() -> None:
    """The factory line: enroll boards (key, certificate, MAC, NVS), flash them.

    A station is an API client holding the factory-station role; see docs/manufacturing.md.
    """


def _esptool_process(command: list[str]) -> str:
    """Run esptool for real; its output (echoed to standard error), ToolError on failure."""
    try:
        return _run(command, capture=True)
    except click.ClickException as exc:
        raise ToolError(exc.message) from exc


def _call(api: str, path: str, *, token: str | None = None, **send: Any) -> Any:
    """One API call; its JSON answer, or ClickException with the API's message."""
    headers = {"Accept": "application/json"}
    data: bytes | None = None
    if "form" in send:
        data = urllib.parse.urlencode(send["form"]).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif "json" in send:
        data = json.dumps(send["json"]).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if not api.startswith(("http://", "https://")):
        raise click.UsageError(f"--api {api!r}: an http:// or https:// URL")
    url = api.rstrip("/") + path
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        raise click.ClickException(f"{path}: {exc.code} {message}") from exc
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach the API at {api}: {exc.reason}") from exc


def _secret(secret_file: Path | None, secret_stdin: bool) -> str:
    if secret_stdin == (secret_file is not None):
        raise click.UsageError("give --client-secret-file or --client-secret-stdin")
    text = secret_file.read_text() if secret_file is not None else sys.stdin.readline()
    secret = text.rstrip("\r\n")
    if not secret:
        raise click.UsageError("the client secret is empty")
    return secret


def _broker_ca(path: Path) -> str:
    """The broker's CA file, checked before anything is enrolled: PEM certificates only."""
    from cryptography import x509

    text = path.read_text()
    try:
        x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise click.ClickException(f"{path}: not PEM certificates ({exc})") from exc
    return text if text.endswith("\n") else text + "\n"


@factory.command("enroll")
@click.option("--serial", required=True, help="The board's serial, from an approved batch.")
@click.option(
    "--port",
    help="Serial port of the master board, e.g. /dev/ttyACM0 (not with --simulated-board).",
)
@click.option(
    "--slave-port",
    "slave_ports",
    multiple=True,
    metavar="PORT",
    help="Port of a slave MCU: its MAC is read as its unique id. Repeat per slave.",
)
@click.option(
    "--slave-id",
    "slave_ids",
    multiple=True,
    metavar="HEX",
    help="A slave MCU's unique id, when read otherwise (test jig). Repeat per slave.",
)
@click.option(
    "--chip-mac",
    is_flag=True,
    help="Record the chip's own MAC instead of assigning one from the MAC pool.",
)
@click.option(
    "--api",
    envvar="AMPFLEET_FACTORY_API",
    required=True,
    metavar="URL",
    help="The platform's API, e.g. https://fleet.example.com (env AMPFLEET_FACTORY_API).",
)
@click.option(
    "--client-id",
    envvar="AMPFLEET_FACTORY_CLIENT_ID",
    required=True,
    help="The station's API client id (env AMPFLEET_FACTORY_CLIENT_ID).",
)
@click.option(
    "--client-secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the station's client secret.",
)
@click.option("--client-secret-stdin", is_flag=True, help="Read the client secret from stdin.")
@click.option(
    "--broker-url",
    required=True,
    metavar="URL",
    help="Broker the device connects to, e.g. mqtts://mqtt.example.com:8883.",
)
@click.option(
    "--broker-ca-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CA of the broker's own server certificate (PEM), when the platform PKI did not "
    "issue it (docker-compose.yml's broker-ca.pem): the device trusts it beside the "
    "platform's CA chain.",
)
@click.option("--wifi-ssid", metavar="SSID", help="Wi-Fi network to join [default: none].")
@click.option("--wifi-password", metavar="PASSPHRASE", help="Its WPA2 passphrase.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the NVS partition (SERIAL.bin, SERIAL.csv, mode 0600) in this directory; "
    "required without --flash [default: a temporary one, deleted once flashed].",
)
@click.option("--flash", "do_flash", is_flag=True, help="Flash the NVS partition (and below).")
@click.option(
    "--micropython",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --flash: the MicroPython image for the ampfleet partition table, first.",
)
@click.option(
    "--bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --flash: the bundle archive of the firmware to flash (the version enrollment "
    "names is checked against it).",
)
@click.option("--erase", is_flag=True, help="With --flash: erase the whole flash first.")
@click.option(
    "--baud",
    type=click.IntRange(min=9600),
    default=flashing.DEFAULT_BAUD,
    show_default=True,
    help="Serial speed.",
)
@click.option(
    "--station-key",
    is_flag=True,
    help="Make the key on the station even when the board could (a simulated board standing "
    "in for a real one): it is written into the NVS.",
)
@click.option(
    "--simulated-board",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Enroll a simulated board (firmware/host/esp32c3.py) kept in this directory instead "
    "of one on a port; it makes its own key.",
)
def enroll_command(
    serial: str,
    port: str | None,
    slave_ports: tuple[str, ...],
    slave_ids: tuple[str, ...],
    chip_mac: bool,
    api: str,
    client_id: str,
    client_secret_file: Path | None,
    client_secret_stdin: bool,
    broker_url: str,
    broker_ca_file: Path | None,
    wifi_ssid: str | None,
    wifi_password: str | None,
    out: Path | None,
    do_flash: bool,
    micropython: Path | None,
    bundle: Path | None,
    erase: bool,
    baud: int,
    station_key: bool,
    simulated_board: Path | None,
) -> None:
    """Enroll one board: read its IDs, make its key and CSR, get its certificate and MAC,
    write its NVS partition, optionally flash.

    The device id is the serial (the CSR's CN). Prints the enrollment as JSON on standard
    output; esptool's output goes to standard error.
    """
    broker_ca = _broker_ca(broker_ca_file) if broker_ca_file is not None else ""
    run: Esptool
    board_keys: KeyOnBoard | None = None
    if simulated_board is not None:
        from firmware.host.esp32c3 import SimulatedBoard

        board = SimulatedBoard(simulated_board)
        run, port = board.run, port or "sim"
        board_keys = None if station_key else board
        slave_ports = slave_ports or tuple(board.slaves)
    elif port is None:
        raise click.UsageError("give --port (or --simulated-board)")
    else:
        run = _esptool_process
    if out is None and not do_flash:
        raise click.UsageError("without --flash, give --out: where the NVS partition goes")
    if (micropython or bundle or erase) and not do_flash:
        raise click.UsageError("--micropython, --bundle and --erase go with --flash")
    secret = _secret(client_secret_file, client_secret_stdin)
    try:
        nvs.check_device_id(serial)
        mac = station.read_mac(run, port, baud)
        found = [station.unique_id(station.read_mac(run, p, baud)) for p in slave_ports]
        slaves = found + [station.unique_id(s) for s in slave_ids]
        if board_keys is not None:
            key_pem, csr = None, board_keys.make_csr(serial)
        else:
            made_key, csr = station.make_key_and_csr(serial)
            key_pem = made_key
    except ToolError as exc:
        raise click.ClickException(str(exc)) from exc

    token = _call(
        api,
        "/api/v1/auth/token",
        form={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )["access_token"]
    request: dict[str, Any] = {
        "serial": serial,
        "csr": csr,
        "chip_id": station.unique_id(mac),
        "slave_ids": slaves,
    }
    if chip_mac:
        request["mac"] = mac
    enrolled = _call(api, "/api/v1/enrollment", token=token, json=request)

    try:
        content = station.EnrolledNvs(
            device_id=enrolled["device_id"],
            broker_url=broker_url,
            client_cert=enrolled["certificate_chain"].encode(),
            # The board verifies the broker's server certificate with these: the broker's own
            # CA when it has one (it signs no device), then the platform's chain.
            ca_cert=(broker_ca + enrolled["ca_chain"]).encode(),
            client_key=key_pem,
            mac=None if chip_mac else enrolled["mac"],
            wifi_ssid=wifi_ssid,
            wifi_password=wifi_password,
            guest_keys=enrolled["guest_keys"].encode() if enrolled.get("guest_keys") else None,
        )
        image = nvs.partition(nvs.csv_text(content), nvs.check_size(0x6000))
    except ToolError as exc:
        raise click.ClickException(f"enrolled, but the NVS cannot be made: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="ampfleet-nvs-") as scratch:
        where = out or Path(scratch)
        target = where / f"{enrolled['device_id']}.bin"
        _write_private(target, image)
        _write_private(target.with_suffix(".csv"), nvs.csv_text(content).encode())
        if do_flash:
            _flash(run, port, baud, target, micropython, bundle, erase, enrolled)
        summary = {
            "device_id": enrolled["device_id"],
            "serial": enrolled["serial"],
            "mac": enrolled["mac"],
            "chip_id": request["chip_id"],
            "slave_ids": sorted(slaves),
            "certificate_serial": enrolled["certificate_serial"],
            "not_after": enrolled["not_after"],
            "firmware": enrolled["firmware"]["version"],
            "key": "made on the board" if board_keys is not None else "made by the station",
            "nvs": str(target) if out else None,
            "flashed": do_flash,
        }
    click.echo(json.dumps(summary, indent=1))


def _flash(
    run: Esptool,
    port: str,
    baud: int,
    nvs_file: Path,
    micropython: Path | None,
    bundle: Path | None,
    erase: bool,
    enrolled: dict[str, Any],
) -> None:
    if bundle is not None:
        wanted = enrolled["firmware"]["bundle"]
        if bundle.name != wanted:
            raise click.ClickException(
                f"enrollment names {wanted} (firmware {enrolled['firmware']['version']}) as the "
                f"firmware to flash, not {bundle.name}"
            )
    try:
        vfs = _vfs_image(bundle) if bundle is not None else None
        commands = flashing.flash_commands(
            port, baud, nvs=nvs_file, vfs=vfs, micropython=micropython, erase=erase
        )
        for command in commands:
            run(command)
    except ToolError as exc:
        raise click.ClickException(f"enrolled, but flashing failed: {exc}") from exc


@factory.command("simulated-board")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--serial",
    required=True,
    help="The serial it will be enrolled as: its MCU ids are those the simulated charger of "
    "that device id announces.",
)
def simulated_board_command(directory: Path, serial: str) -> None:
    """Make a factory-new simulated board in DIRECTORY, for `enroll --simulated-board`.

    Prints its MCUs' MACs (their unique ids) as JSON.
    """
    from firmware.host.esp32c3 import SimulatedBoard

    if (directory / "board.json").exists():
        raise click.ClickException(f"{directory} holds a board already")
    board = SimulatedBoard.create(directory, serial)
    click.echo(json.dumps({"mac": board.mac, "slaves": board.slaves}, indent=1))
