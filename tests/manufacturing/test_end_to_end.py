"""A charger's whole life, end to end (issue 14's acceptance): a batch created by one admin and
approved by another; 50 simulated boards enrolled by ``ampfleet factory enroll`` against the API
over HTTP; the batch's label sheet printed, its QR codes decoded back to the codes; every charger
released by scanning its two labels; an owner pairs one with both codes, invites a guest, and the
guest charges offline on the platform-signed credential the charger checks with the keys the
factory wrote into its NVS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
import zxingcpp
from click.testing import CliRunner
from flask import Flask
from werkzeug.serving import make_server

from cloud.cli import main
from cloud.devicelink.accounts import service_password
from cloud.mail.backends import EXTENSION as MAILER
from cloud.mail.backends import open_mailer
from firmware.core import contract
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.host.boards import load_board, load_boards
from firmware.host.esp32c3 import SimulatedBoard
from firmware.host.fleet import Fleet
from firmware.tools import nvs
from tests.charging.test_invitations import new_guest
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.link import AppFactory, app_settings, link_settings, mtls_app
from tests.manufacturing.support import approved_batch, mac_pool, station_client
from tests.manufacturing.test_factory_cli import BROKER
from tests.mqtt import Mqtt
from tests.pairing.test_pairing_api import split
from tests.services.amqtt_broker import EmbeddedBroker, free_port
from tests.services.mosquitto import Mosquitto, make_tls_files
from tests.services.smtp import SmtpServer, mail_settings

CHARGERS = 50


def enroll_all(api: str, client_id: str, secret: str, boards: dict[str, Path]) -> None:
    """The station's loop: one ``ampfleet factory enroll`` per board, flashing it."""
    for serial, board in boards.items():
        args = ["factory", "enroll", "--serial", serial, "--simulated-board", str(board)]
        args += ["--api", api, "--client-id", client_id, "--client-secret-stdin"]
        args += ["--broker-url", BROKER, "--flash"]
        result = CliRunner().invoke(main, args, input=secret + "\n")
        assert result.exit_code == 0, (serial, result.output)


def rows_of(sheet: bytes) -> list[tuple[str, str]]:
    """(charger code, box code) of every row of a label sheet, read as a scanner reads it: each
    row's two QR codes side by side, rows top to bottom, pages in order."""
    document = pdfium.PdfDocument(sheet)
    rows: list[tuple[str, str]] = []
    for page in document:
        found = zxingcpp.read_barcodes(
            page.render(scale=150 / 72).to_pil(), formats=zxingcpp.BarcodeFormat.QRCode
        )
        by_row: dict[int, list[Any]] = {}
        for code in found:
            by_row.setdefault(code.position.top_left.y // 100, []).append(code)
        for _, pair in sorted(by_row.items()):
            left, right = sorted(pair, key=lambda c: c.position.top_left.x)
            rows.append((left.text, right.text))
    assert len(document) == (CHARGERS + 4) // 5
    return rows


@dataclasses.dataclass
class Platform:
    """The API (served over HTTP too, for the station's command), a Mosquitto with the mutual-TLS
    listener on the platform PKI, both on one database: what production runs."""

    app: Flask
    url: str
    admin: Client
    tenant: Tenant
    mosquitto: Mosquitto
    mail: SmtpServer


@pytest.fixture
def platform(make_app: AppFactory, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Platform]:
    ca_file, crl_file = tmp_path / "pki" / "ca-chain.pem", tmp_path / "pki" / "crl.pem"
    mosquitto = Mosquitto(tmp_path / "mosquitto", client_ca_file=ca_file, crl_file=crl_file)
    app = mtls_app(make_app, mosquitto, ca_file, crl_file)
    app.extensions[MAILER] = open_mailer(mail_settings(smtp_server))
    with mosquitto:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            admin = Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
            yield Platform(
                app,
                f"http://127.0.0.1:{server.server_port}",
                admin,
                Tenant.create(admin),
                mosquitto,
                smtp_server,
            )
        finally:
            server.shutdown()
            thread.join(10)


def test_from_the_factory_line_to_a_guest_charging_offline(
    platform: Platform, tmp_path: Path
) -> None:
    tenant, client, api = platform.tenant, platform.admin, platform.url
    # The line is set up: a MAC pool, a batch created by the platform admin, approved by another.
    _, approver = tenant.user("organization-admin")
    pool = mac_pool(tenant, size=CHARGERS)
    batch, serials = approved_batch(tenant, approver, count=CHARGERS)
    assert batch["approved_by"] != batch["created_by"]
    client_id, secret = station_client(tenant)
    station = signed_in_client(client, client_id, secret)

    # 50 boards enrolled and flashed by the factory command.
    boards = {s: SimulatedBoard.create(tmp_path / "boards" / s, s).directory for s in serials}
    enroll_all(api, client_id, secret, boards)
    devices = {s: tenant.admin.get(f"/devices/{s}").get_json() for s in serials}
    assert {d["state"] for d in devices.values()} == {"provisioned"}
    assert len({d["mac"] for d in devices.values()}) == CHARGERS
    assert {d["mac"] for d in devices.values()} >= {pool["first"]}
    enrolled = station.get(
        f"/batches/{batch['id']}/serials", query_string={"state": "enrolled", "page_size": 100}
    )
    assert len(enrolled.get_json()) == CHARGERS

    # The batch's label sheet: its QR codes decode back to codes the release accepts.
    sheet = station.post("/labels", json={"batch_id": batch["id"], "format": "pdf"})
    assert sheet.status_code == 200, sheet.get_json()
    scanned = rows_of(sheet.data)
    assert len(scanned) == CHARGERS and all(split(set(row)) == row for row in scanned)
    again = station.post("/labels", json={"batch_id": batch["id"]})
    assert again.status_code == 409, again.get_json()

    # Release: the line scans each charger's label, then its box's.
    released: dict[str, tuple[str, str]] = {}
    for charger_code, box_code in scanned:
        answer = station.post(
            "/releases", json={"charger_code": charger_code, "box_code": box_code}
        )
        assert answer.status_code == 201, answer.get_json()
        released[answer.get_json()["device_id"]] = (charger_code, box_code)
    assert sorted(released) == sorted(serials)
    states = {tenant.admin.get(f"/devices/{s}").get_json()["state"] for s in serials}
    assert states == {"released"}

    # Every charger connects to Mosquitto's mutual-TLS listener with the key it made and the
    # certificate the factory wrote into its flash; the cloud hears each one's status.
    fleet = load_boards([tmp_path / "boards"])
    assert on_mosquitto(platform.mosquitto, fleet) == set(serials)
    # The same chargers on the embedded broker's mutual-TLS listener (the laptop's broker).
    assert on_embedded(platform.app, fleet, tmp_path / "embedded") == set(serials)

    # An owner (an account with no role) pairs one charger by scanning both codes.
    device_id = serials[7]
    charger_code, box_code = released[device_id]
    _, owner = tenant.user()
    paired = owner.post("/pairings", json={"charger_code": charger_code, "box_code": box_code})
    assert paired.status_code == 201, paired.get_json()
    reused = owner.post("/pairings", json={"charger_code": charger_code, "box_code": box_code})
    assert reused.status_code == 409, reused.get_json()

    # The owner invites a guest; the guest asks for the platform-signed credential.
    _, guest, _ = new_guest(
        client,
        platform.mail,
        owner,
        device_id,
        tenant,
        valid_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
    )
    credential = guest.post(f"/devices/{device_id}/guest-credential")
    assert credential.status_code == 201, credential.get_json()

    # The charger boots with what the factory wrote into its NVS, and has no cloud link.
    broker = MemoryBroker()
    broker.outage()
    charger = charger_booted_from(boards[device_id], device_id, broker)
    charger.ev.plug_in(target_wh=5_000)
    charger.run_for(2_000)
    assert charger.start_with_guest_credential(credential.get_json()["credential"]) is None
    charger.run_for(30_000)
    assert charger.plant.contactor and not charger.master.link.up
    events = [
        contract.decode_event(m.payload, now_ms()).type
        for m in broker.messages(contract.topic(device_id, contract.EVENTS))
    ]
    assert events == []  # nothing reached the cloud: it was all decided on the charger


def signed_in_client(client: Client, client_id: str, secret: str) -> Client:
    """An API client signed in with its client credentials (as the station's programs are)."""
    response = client.http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200, response.get_json()
    return Client(client.http, response.get_json()["access_token"])


def charger_booted_from(board: Path, device_id: str, broker: MemoryBroker) -> SimCharger:
    """The simulated charger of an enrolled board, with what the factory wrote into its NVS."""
    enrolled = load_board(board)
    assert enrolled.device_id == device_id and enrolled.records[nvs.GUEST_KEYS]
    clock = SimClock(int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    charger = SimCharger(device_id, clock, broker=broker, storage=enrolled.storage())
    charger.run_for(5_000)
    return charger


def run_fleet(
    host: str, mtls_port: int, server_ca: Path, service: Mqtt, boards: list[Any]
) -> set[str]:
    """Run the enrolled boards as a fleet against a broker's mutual-TLS listener until all are
    connected; the devices whose online status the cloud's ``service`` account received."""
    heard: set[str] = set()

    def listen() -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                message = service.messages.get_nowait()
                if contract.decode_status(message.payload, now_ms()).state == "online":
                    heard.add(contract.parse_topic(message.topic).device_id)

    async def scenario() -> None:
        fleet = Fleet.from_boards(
            boards,
            host,
            mtls_port,
            server_ca_file=str(server_ca),
            seed=88,
            boot_rate=1000,
            tick_ms=50,
            idle_step_ms=500,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(fleet.run(stop))
        try:
            deadline = time.monotonic() + 60
            while sum(t.is_connected for t in fleet.transports) < len(boards) or len(heard) < len(
                boards
            ):
                assert time.monotonic() < deadline, f"online: {len(heard)} of {len(boards)}"
                listen()
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await running

    with service.connected():
        assert not service.subscribe("af/+/status").is_failure
        asyncio.run(scenario())
    return heard


def on_mosquitto(mosquitto: Mosquitto, boards: list[Any]) -> set[str]:
    """The fleet on Mosquitto's mutual-TLS listener, heard by the cloud's service account."""
    service = Mqtt(
        mosquitto.host,
        mosquitto.port,
        mosquitto.service_user,
        mosquitto.service_password,
        client_id=f"{mosquitto.service_user}-e2e",
    )
    return run_fleet(mosquitto.host, mosquitto.mtls_port, mosquitto.ca_file, service, boards)


def on_embedded(app: Flask, boards: list[Any], directory: Path) -> set[str]:
    """The fleet on an embedded broker's mutual-TLS listener, on the same database."""
    settings = app_settings(app)
    server_ca, cert, key = make_tls_files(directory)
    mtls_port = free_port()
    overrides = link_settings(
        settings.data_path,
        settings.database_url,
        broker_mtls_port=mtls_port,
        broker_tls_cert_file=str(cert),
        broker_tls_key_file=str(key),
        broker_device_passwords="false",
    )
    with EmbeddedBroker(overrides) as broker:
        service = Mqtt(
            broker.host,
            broker.port,
            broker.settings.broker_service_user,
            service_password(broker.settings),
            client_id="svc-e2e",
        )
        return run_fleet(broker.host, mtls_port, server_ca, service, boards)


def now_ms() -> int:
    return int(time.time() * 1000)
