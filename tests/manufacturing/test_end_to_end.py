"""A charger's whole life, end to end (issue 14's acceptance): a batch created by one admin and
approved by another; 50 simulated boards enrolled by ``ampfleet factory enroll`` against the API
over HTTP; the batch's label sheet printed, its QR codes decoded back to the codes; every charger
released by scanning its two labels; an owner pairs one with both codes, invites a guest, and the
guest charges offline on the platform-signed credential the charger checks with the keys the
factory wrote into its NVS."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import zxingcpp
from click.testing import CliRunner
from flask import Flask

from cloud.cli import main
from firmware.core import contract
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.host.esp32c3 import SimulatedBoard
from firmware.tools import nvs
from firmware.tools.partitions import partition
from tests.charging.test_invitations import new_guest
from tests.helpers import Client, Tenant
from tests.manufacturing.support import approved_batch, mac_pool, station_client
from tests.manufacturing.test_factory_cli import BROKER
from tests.pairing.test_pairing_api import split
from tests.services.smtp import SmtpServer
from tests.tools import nvs_reader

CHARGERS = 50


def enroll_all(api: str, client_id: str, secret: str, boards: dict[str, Path]) -> None:
    """The station's loop: one ``ampfleet factory enroll`` per board, flashing it."""
    for serial, board in boards.items():
        args = ["factory", "enroll", "--serial", serial, "--simulated-board", str(board)]
        args += ["--api", api, "--client-id", client_id, "--client-secret-stdin"]
        args += ["--broker-url", BROKER, "--flash"]
        result = CliRunner().invoke(main, args, input=secret + "\n")
        assert result.exit_code == 0, (serial, result.output)


def nvs_of(board: Path) -> dict[str, bytes]:
    """The NVS items the factory wrote into a board's flash, as the firmware reads them."""
    part = partition("nvs")
    flash = SimulatedBoard(board).read_flash(part.offset, part.size)
    return {key: item.value for (_, key), item in nvs_reader.read(flash).items()}


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


def test_from_the_factory_line_to_a_guest_charging_offline(
    app: Flask, api: str, client: Client, api_smtp: SmtpServer, tenant: Tenant, tmp_path: Path
) -> None:
    # The line is set up: a MAC pool, a batch created by the platform admin, approved by another.
    _, approver = tenant.user("organization-admin")
    pool = mac_pool(tenant, size=CHARGERS)
    batch, serials = approved_batch(tenant, approver, count=CHARGERS)
    assert batch["approved_by"] != batch["created_by"]
    client_id, secret = station_client(tenant)
    station = signed_in_client(client, client_id, secret)

    # 50 boards enrolled and flashed by the factory command.
    boards = {s: SimulatedBoard.create(tmp_path / s, s).directory for s in serials}
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
        api_smtp,
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
        contract.decode_event(m.payload, None).type
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
    """The simulated charger of an enrolled board, with the keys its NVS holds."""
    items = nvs_of(board)
    assert items["device_id"] == device_id.encode()
    clock = SimClock(int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    charger = SimCharger(device_id, clock, broker=broker)
    charger.storage.put(nvs.GUEST_KEYS, items[nvs.GUEST_KEYS])
    charger.run_for(5_000)
    return charger
