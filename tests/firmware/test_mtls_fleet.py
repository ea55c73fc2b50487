"""Simulated chargers from enrolled simulated boards, over mutual TLS to a real Mosquitto that
requires a client certificate (``require_certificate``, ``use_identity_as_username``): each
presents the key and certificate its board holds, one from another CA is refused, and a
certificate renewed over the device contract is presented from the next connection on."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pwd
import queue
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from firmware.core import certs, contract
from firmware.host.boards import ClientTls, load_board, load_boards, save_board
from firmware.host.esp32c3 import SimulatedBoard
from firmware.host.fleet import Fleet
from firmware.tools import nvs, station
from firmware.tools.partitions import partition
from tests.services.mosquitto import MOSQUITTO, free_port, make_tls_files

NOW = dt.datetime.now(dt.UTC)


class Authority:
    """A device CA made here."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, public_key: ec.EllipticCurvePublicKey, cn: str, days: int) -> bytes:
        """A client certificate, PEM, followed by this CA."""
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self.pem


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Authority]]:
    """Mosquitto with one TLS listener that requires a certificate of the device CA."""
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.fail(f"{MOSQUITTO} is missing: run scripts/services.sh")
    directory = tmp_path_factory.mktemp("mtls")
    server_ca, server_cert, server_key = make_tls_files(directory)
    devices = Authority("Test Device CA")
    (directory / "devices-ca.pem").write_bytes(devices.pem)
    port = free_port()
    (directory / "mosquitto.conf").write_text(
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        "persistence false\n"
        f"log_dest file {directory / 'mosquitto.log'}\n"
        "allow_anonymous false\n"
        f"listener {port} 127.0.0.1\n"
        f"cafile {directory / 'devices-ca.pem'}\n"
        f"certfile {server_cert}\nkeyfile {server_key}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(directory / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "no mosquitto"
                time.sleep(0.05)
        yield port, server_ca, devices
    finally:
        process.terminate()
        process.wait(10)


def enrolled_board(
    directory: Path, serial: str, authority: Authority, port: int, server_ca: Path, days: int
) -> SimulatedBoard:
    """What `ampfleet factory enroll --simulated-board` leaves: the board's own key, and its
    certificate in the NVS flashed into the board."""
    board = SimulatedBoard.create(directory, serial)
    csr = x509.load_pem_x509_csr(board.make_csr(serial).encode())
    content = station.EnrolledNvs(
        device_id=serial,
        broker_url=f"mqtts://127.0.0.1:{port}",
        client_cert=authority.sign(csr.public_key(), serial, days),  # type: ignore[arg-type]
        ca_cert=server_ca.read_bytes(),
    )
    image = directory / "nvs.bin"
    image.write_bytes(nvs.partition(nvs.csv_text(content), partition("nvs").size))
    board.run(["esptool", "write-flash", hex(partition("nvs").offset), str(image)])
    return board


class Cloud:
    """A client with a certificate of the device CA, answering certificate requests."""

    def __init__(self, port: int, server_ca: Path, authority: Authority, directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        (directory / "cloud.pem").write_bytes(authority.sign(key.public_key(), "cloud", 1))
        (directory / "cloud.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.authority = authority
        self.requests: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud")
        self.client.tls_set(
            str(server_ca), str(directory / "cloud.pem"), str(directory / "cloud.key")
        )
        self.client.on_message = lambda _c, _u, message: self.requests.put(message)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(contract.topic_filter(contract.CERT_REQUEST), qos=1)
        self.client.loop_start()

    def answer(self, message: mqtt.MQTTMessage) -> bytes:
        """Sign the request's CSR for a year and publish the certificate; the chain sent."""
        device_id = contract.parse_topic(message.topic).device_id
        request = contract.decode_cert_request(message.payload)
        csr = x509.load_pem_x509_csr((request.csr or "").encode())
        chain = self.authority.sign(csr.public_key(), device_id, 365)  # type: ignore[arg-type]
        leaf = x509.load_pem_x509_certificates(chain)[0]
        payload = contract.encode_cert(
            leaf.public_bytes(serialization.Encoding.PEM).decode(),
            chain.decode(),
            format(leaf.serial_number, "x"),
            int(leaf.not_valid_after_utc.timestamp() * 1000),
        )
        self.client.publish(contract.topic(device_id, contract.CERT), payload, qos=1)
        return chain

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def until(condition: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_enrolled_boards_connect_with_their_certificates_and_renew(
    broker: tuple[int, Path, Authority], tmp_path: Path
) -> None:
    port, server_ca, authority = broker
    boards = tmp_path / "boards"
    for n, days in enumerate((365, 365, 10)):  # the third is due for renewal
        enrolled_board(boards / f"b{n}", f"MT-{n:04d}", authority, port, server_ca, days)
    stranger = Authority("Another CA")
    enrolled_board(tmp_path / "other", "MT-9999", stranger, port, server_ca, 365)
    found = load_boards([boards])
    assert [b.device_id for b in found] == ["MT-0000", "MT-0001", "MT-0002"]
    assert found[0].records[certs.NVS_KEY] == (boards / "b0" / "secure" / "key.pem").read_bytes()
    cloud = Cloud(port, server_ca, authority, tmp_path)

    async def scenario() -> None:
        # Seed 88: the three chargers' power-on waits are short (at most 1.8 s).
        fleet = Fleet.from_boards(
            found, "127.0.0.1", port, seed=88, boot_rate=1000, tick_ms=50, idle_step_ms=500
        )
        refused = Fleet.from_boards(
            load_boards([tmp_path / "other"]), "127.0.0.1", port, server_ca_file=str(server_ca)
        )
        stop = asyncio.Event()
        running = [asyncio.create_task(f.run(stop)) for f in (fleet, refused)]
        try:
            await until(lambda: sum(t.is_connected for t in fleet.transports) == 3, "3 online")
            message = await asyncio.to_thread(cloud.requests.get, True, 15)
            assert contract.parse_topic(message.topic).device_id == "MT-0002"
            chain = cloud.answer(message)
            storage = fleet.chargers[2].storage
            await until(lambda: storage.get(certs.NVS_CERT) == chain, "the new certificate")
            # The next connection presents it (and the new key the board made for it).
            fleet.transports[2].set_network(False)
            await until(lambda: not fleet.chargers[2].master.link.up, "the link down")
            fleet.transports[2].set_network(True)
            await until(lambda: fleet.chargers[2].master.link.up, "back online", 30)
            tls = fleet.transports[2].context
            assert isinstance(tls, ClientTls)
            assert tls._made_from == (chain, storage.get(certs.NVS_KEY))
            assert not any(t.is_connected for t in refused.transports)  # another CA
            # Written back into the board, the next run presents the renewed certificate.
            assert not save_board(found[0], fleet.chargers[0].storage)  # nothing renewed
            assert save_board(found[2], storage)
            again = load_board(boards / "b2")
            assert again.records[certs.NVS_CERT] == chain
            assert again.records[certs.NVS_KEY] == storage.get(certs.NVS_KEY)
        finally:
            stop.set()
            await asyncio.gather(*running)

    try:
        asyncio.run(scenario())
    finally:
        cloud.close()
    # A client that presents no certificate does not get past the handshake.
    context = ssl.create_default_context(cafile=str(server_ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"\x10\x00")
        assert tls.recv(4)  # CONNACK never comes: the server drops us


def test_simulate_takes_boards_only_over_mutual_tls(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloud.cli import main

    (tmp_path / "empty").mkdir()
    env = {"AMPFLEET_DATA_DIR": str(tmp_path / "data")}
    done = CliRunner().invoke(main, ["simulate", "--board", str(tmp_path / "empty")], env=env)
    assert done.exit_code != 0 and "neither a simulated board" in done.output
    SimulatedBoard.create(tmp_path / "new", "MT-0100")  # made, never enrolled
    done = CliRunner().invoke(main, ["simulate", "--board", str(tmp_path / "new")], env=env)
    assert done.exit_code != 0 and "was not enrolled" in done.output
    authority = Authority("CLI CA")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.pem)
    enrolled_board(tmp_path / "b", "MT-0101", authority, 8883, ca, 365)
    args = ["simulate", "--board", str(tmp_path / "b"), "--broker-url", "mqtt://127.0.0.1:1883"]
    done = CliRunner().invoke(main, args, env=env)
    assert done.exit_code != 0 and "is not mqtts://" in done.output
