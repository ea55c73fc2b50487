"""``ampfleet factory enroll`` against the API over HTTP, with simulated boards at the esptool
boundary (firmware/host/esp32c3.py): what lands in the registry and in the board's flash, and
that the simulated charger then announces the hardware it was enrolled with."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.mosquitto.tls import ensure_tls_files
from cloud.cli import main
from cloud.devices.hardware import differences
from firmware.core import contract, guestpass
from firmware.host.charger import SimCharger
from firmware.host.clock import SimClock
from firmware.host.esp32c3 import SimulatedBoard
from firmware.host.network import MemoryBroker
from firmware.tools.partitions import partition
from tests.helpers import Tenant
from tests.manufacturing.support import approved_batch, mac_pool, station_client
from tests.tools import nvs_reader

ROOT = Path(__file__).resolve().parents[2]
BROKER = "mqtts://mqtt.example.com:8883"


def enroll(api: str, tenant: Tenant, serial: str, board: Path, *extra: str) -> tuple[int, str]:
    client_id, secret = station_client(tenant)
    args = ["factory", "enroll", "--serial", serial, "--simulated-board", str(board)]
    args += ["--api", api, "--client-id", client_id, "--client-secret-stdin"]
    args += ["--broker-url", BROKER, *extra]
    result = CliRunner().invoke(main, args, input=secret + "\n")
    return result.exit_code, result.output


def test_a_simulated_board_is_enrolled_and_flashed(
    api: str, tenant: Tenant, tmp_path: Path
) -> None:
    _, approver = tenant.user("organization-admin")
    pool = mac_pool(tenant, size=8)
    _, (serial, other) = approved_batch(tenant, approver, count=2)
    board = SimulatedBoard.create(tmp_path / "board", serial)

    code, output = enroll(api, tenant, serial, board.directory, "--flash", "--out", str(tmp_path))
    assert code == 0, output
    summary = json.loads(output[output.index("{") :])
    assert summary["device_id"] == serial and summary["mac"] == pool["first"]
    assert summary["key"] == "made on the board" and summary["flashed"] is True
    device = tenant.admin.get(f"/devices/{serial}").get_json()
    assert (
        device["state"] == "provisioned" and device["chip_id"] == board.mac.replace(":", "").lower()
    )
    assert sorted(device["slave_ids"]) == sorted(
        m.replace(":", "").lower() for m in board.slaves.values()
    )

    # The NVS partition is in the board's flash, as the device reads it.
    part = partition("nvs")
    written = board.read_flash(part.offset, part.size)
    assert written == (tmp_path / f"{serial}.bin").read_bytes()
    assert (tmp_path / f"{serial}.bin").stat().st_mode & 0o077 == 0
    items = {key: item.value for (ns, key), item in nvs_reader.read(written).items()}
    assert items["device_id"] == serial.encode() and items["broker_url"] == BROKER.encode()
    assert "client_key" not in items  # made on the board, never seen by the station
    assert items["mac"] == bytes.fromhex(pool["first"].replace(":", ""))
    cert = x509.load_pem_x509_certificates(items["client_cert"])[0]
    assert (
        cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == board.public_key_pem()
    )
    assert x509.load_pem_x509_certificates(items["ca_cert"])
    # The platform's guest-credential keys: what the charger checks a guest's pass with offline.
    assert guestpass.keys_from_nvs(items["guest_keys"])

    # The simulated charger of that board announces the hardware it was enrolled with.
    broker = MemoryBroker()
    charger = SimCharger(serial, SimClock(), broker=broker)
    charger.run_for(5_000)
    hw = contract.decode_status(broker.retained[f"af/{serial}/status"], None).hw
    assert differences(device["chip_id"], device["slave_ids"], hw) == []

    # Enrolled once only; a station-made key goes into the NVS.
    code, output = enroll(api, tenant, serial, board.directory, "--out", str(tmp_path / "again"))
    assert code != 0 and "enrolled already" in output
    made = CliRunner().invoke(
        main, ["factory", "simulated-board", str(tmp_path / "second"), "--serial", other]
    )
    assert made.exit_code == 0, made.output
    assert set(json.loads(made.output)["slaves"]) == {"meter", "relay"}
    # The broker's own CA (docker-compose.yml's broker-ca.pem) is trusted beside the platform's.
    broker_ca, _ = ensure_tls_files(tmp_path / "broker", ["mqtt.example.com"])
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("no certificate here")
    code, output = enroll(api, tenant, other, tmp_path / "second", "--broker-ca-file", str(not_pem))
    assert code != 0 and "not PEM certificates" in output
    assert tenant.admin.get(f"/devices/{other}").status_code == 404  # nothing enrolled
    code, output = enroll(
        api,
        tenant,
        other,
        tmp_path / "second",
        "--station-key",
        "--out",
        str(tmp_path),
        "--broker-ca-file",
        str(broker_ca.ca_file),
    )
    assert code == 0, output
    items = {
        key: i.value
        for (_, key), i in nvs_reader.read((tmp_path / f"{other}.bin").read_bytes()).items()
    }
    assert serialization.load_pem_private_key(items["client_key"], None)
    trusted = x509.load_pem_x509_certificates(items["ca_cert"])
    assert trusted[0] == x509.load_pem_x509_certificate(broker_ca.ca_file.read_bytes())
    assert len(trusted) == 3  # then the platform's device CA and root


def test_the_docs_show_the_commands_help() -> None:
    doc = (ROOT / "docs" / "manufacturing.md").read_text()
    for args in (
        ["factory", "--help"],
        ["factory", "enroll", "--help"],
        ["factory", "simulated-board", "--help"],
    ):
        result = CliRunner().invoke(main, args, prog_name="ampfleet")
        assert result.exit_code == 0
        assert f"```text\n{result.output}```" in doc, "docs/manufacturing.md: paste the new --help"
