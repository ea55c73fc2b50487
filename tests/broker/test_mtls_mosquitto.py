"""Mutual TLS on a real Mosquitto 2.0.11 (docs/mutual-tls.md): devices with certificates of
the platform PKI, issued through the API, on the listener the project's config generates.

One Mosquitto and one API (external broker, device passwords off, the factory whitelist) for
the module; each test makes its own devices. The broker re-reads its CRL through
``CrlWatcher`` (what ``ampfleet broker crl-reload`` runs beside it in production).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from broker.admin import broker_admin
from broker.mosquitto.crl_reload import CrlWatcher
from broker.mosquitto.tls import ensure_tls_files
from broker.registry import refresher
from cloud.db import get_database, utcnow
from cloud.devicelink.endpoint import Endpoint
from cloud.devices.models import Device
from cloud.devices.status import StatusUpdate
from cloud.devices.status_worker import StatusWorker
from cloud.pki import authorities, issuance
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.link import AppFactory, app_settings, mtls_app
from tests.mqtt import Mqtt, MqttError
from tests.pki.support import make_csr
from tests.services.mosquitto import Mosquitto

QUIET = 0.4  # how long "nothing arrives" is watched


@dataclasses.dataclass(frozen=True)
class Credential:
    """A device's key and certificate, as files a TLS client loads."""

    device_id: str
    certfile: Path
    keyfile: Path
    serial: str = ""


@dataclasses.dataclass
class Setup:
    server: Mosquitto
    app: Flask
    admin: Client
    tenant: Tenant
    directory: Path
    server_ca: Path  # what clients trust for the broker's own certificate

    def credential(
        self, device_id: str, certificate_pem: str, key: Any, serial: str = ""
    ) -> Credential:
        stem = self.directory / f"{device_id}-{secrets.token_hex(3)}"
        certfile, keyfile = stem.with_suffix(".pem"), stem.with_suffix(".key")
        certfile.write_text(certificate_pem)
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Credential(device_id, certfile, keyfile, serial)

    def device(self, *, approved: bool = True) -> Credential:
        """A device registered (under the whitelist: not approved) with a certificate signed
        through the API; approved through the API when asked."""
        device_id = self.tenant.device(state="active")["id"]
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self.admin.post(
            f"/devices/{device_id}/certificates", json={"csr": make_csr(device_id, key)}
        )
        assert issued.status_code == 201, issued.get_json()
        body = issued.get_json()
        if approved:
            self.approve(device_id)
        return self.credential(device_id, body["certificate_pem"], key, body["serial"])

    def approve(self, device_id: str) -> None:
        answer = self.admin.post(f"/devices/{device_id}/approve")
        assert answer.status_code == 200, answer.get_json()

    def mqtt(self, credential: Credential, client_id: str | None = None) -> Mqtt:
        """A client of the mutual-TLS listener presenting ``credential`` (no password)."""
        client = Mqtt(
            self.server.host,
            self.server.mtls_port,
            None,
            None,
            client_id=client_id if client_id is not None else credential.device_id,
        )
        client.client.tls_set(
            ca_certs=str(self.server_ca),
            certfile=str(credential.certfile),
            keyfile=str(credential.keyfile),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        return client

    def service(self) -> Mqtt:
        client_id = f"{self.server.service_user}-{secrets.token_hex(3)}"
        return Mqtt(
            self.server.host,
            self.server.port,
            self.server.service_user,
            self.server.service_password,
            client_id=client_id,
        ).connected()

    def handshake(self, credential: Credential) -> str:
        """Present ``credential`` and send a CONNECT: ``connack`` when the broker accepted
        the CONNECT, else the TLS alert it refused the certificate with."""
        context = ssl.create_default_context(cafile=str(self.server_ca))
        # TLS 1.2: the server judges the client's certificate inside the handshake, so its
        # alert is what the handshake raises (in 1.3 it comes after, and may be lost in the
        # connection's reset).
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(credential.certfile), str(credential.keyfile))
        raw = socket.create_connection((self.server.host, self.server.mtls_port), timeout=5)
        try:
            with context.wrap_socket(raw, server_hostname=self.server.host) as tls:
                # MQTT 3.1.1 CONNECT: clean session, keep-alive 60, the device id as client id.
                client_id = credential.device_id.encode()
                variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
                payload = len(client_id).to_bytes(2, "big") + client_id
                body = variable + payload
                tls.sendall(b"\x10" + bytes([len(body)]) + body)
                answer = tls.recv(4)
                return "connack" if answer[:1] == b"\x20" else f"closed: {answer!r}"
        except ssl.SSLError as exc:
            return str(exc.reason or exc).lower()
        except (ConnectionResetError, BrokenPipeError) as exc:
            return f"reset: {exc}"


@pytest.fixture(scope="module")
def setup(make_app: AppFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("mtls")
    ca_file, crl_file = directory / "pki" / "ca-chain.pem", directory / "pki" / "crl.pem"
    server = Mosquitto(directory / "broker", client_ca_file=ca_file, crl_file=crl_file)
    app = mtls_app(make_app, server, ca_file, crl_file)
    with server:
        watcher = CrlWatcher(crl_file, server.reload, interval=0.1)
        watcher.start()
        admin = Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        try:
            tenant = Tenant.create(admin)
            yield Setup(server, app, admin, tenant, directory, server.ca_file)
        finally:
            watcher.stop()


def test_a_device_with_its_certificate_publishes_and_receives(setup: Setup) -> None:
    device = setup.device()
    other = setup.device()
    with setup.service() as cloud:
        assert not cloud.subscribe("af/+/telemetry").is_failure
        with setup.mqtt(device).connected() as charger:
            assert not charger.subscribe(f"af/{device.device_id}/cmd").is_failure
            charger.publish(f"af/{device.device_id}/telemetry", b'{"p": 1}')
            got = cloud.expect()
            assert (got.topic, got.payload) == (f"af/{device.device_id}/telemetry", b'{"p": 1}')
            cloud.publish(f"af/{device.device_id}/cmd", b"go")
            assert charger.expect().payload == b"go"
            # Only its own subtree, as with a password.
            assert charger.subscribe(f"af/{other.device_id}/cmd").is_failure
            charger.publish(f"af/{other.device_id}/telemetry", b"spoof")
            assert cloud.drain(QUIET) == []
            # The certificate names the session: another device's client id does not take
            # that device's session over (use_username_as_clientid).
            with (
                setup.mqtt(other).connected() as victim,
                setup.mqtt(device, client_id=other.device_id).connected(),
            ):
                assert not victim.wait_disconnected(QUIET)
    # No password on any listener: the device account has none (passwords are off).
    refused = setup.admin.post(f"/devices/{device.device_id}/credentials")
    assert refused.status_code == 409
    assert "AMPFLEET_BROKER_DEVICE_PASSWORDS" in refused.get_json()["message"]
    plain = Mqtt(setup.server.host, setup.server.port, device.device_id, "", device.device_id)
    assert plain.connect().is_failure
    plain.close()


def test_another_ca_and_an_expired_certificate_are_refused_at_the_handshake(
    setup: Setup,
) -> None:
    device = setup.device()
    assert setup.handshake(device) == "connack"

    # Signed by another CA, with the right CN and the platform's profile.
    files, _ = ensure_tls_files(setup.directory / "rogue", ["rogue"])
    rogue_ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    rogue_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    assert isinstance(rogue_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    forged = issuance.device_certificate(
        key.public_key(), device.device_id, rogue_ca, rogue_key, utcnow(), dt.timedelta(days=30)
    )
    refused = setup.handshake(setup.credential(device.device_id, issuance.pem(forged), key))
    assert "alert_unknown_ca" in refused, refused

    # Signed by the platform's own device CA, but expired yesterday.
    settings = app_settings(setup.app)
    with get_database(setup.app).transaction() as session:
        found = authorities.ensure(session, settings)
        ca_key = found.devices.key(session, settings)
    good = x509.load_pem_x509_certificate(device.certfile.read_bytes())
    expired = (
        x509.CertificateBuilder(extensions=list(good.extensions))
        .subject_name(good.subject)
        .issuer_name(good.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utcnow() - dt.timedelta(days=3))
        .not_valid_after(utcnow() - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    refused = setup.handshake(setup.credential(device.device_id, issuance.pem(expired), key))
    assert "alert_certificate_expired" in refused, refused


def test_a_revoked_certificate_is_disconnected_at_once_and_refused_on_reconnect(
    setup: Setup,
) -> None:
    device = setup.device()
    with setup.mqtt(device).connected() as charger:
        revoked = setup.admin.post(
            f"/certificates/{device.serial}/revoke", json={"reason": "keyCompromise"}
        )
        assert revoked.status_code == 200, revoked.get_json()
        started = time.monotonic()
        assert charger.wait_disconnected(2.0)  # dynamic security deleted its client
        assert time.monotonic() - started < 2.0
    # The PKI rewrote the CRL on commit; the watcher made Mosquitto re-read it.
    deadline = time.monotonic() + 3
    while (answer := setup.handshake(device)) == "connack" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "alert_certificate_revoked" in answer, answer
    with pytest.raises(MqttError):
        setup.mqtt(device).connect()


def test_quarantined_devices_may_publish_their_status_only_until_approved(
    setup: Setup,
) -> None:
    waiting = setup.device(approved=False)  # registered under the whitelist: not approved
    topic = f"af/{waiting.device_id}"
    with setup.service() as cloud:
        assert not cloud.subscribe("af/#").is_failure
        with setup.mqtt(waiting).connected() as charger:
            charger.publish(f"{topic}/status", b'{"online": true}')
            assert cloud.expect().topic == f"{topic}/status"
            charger.publish(f"{topic}/telemetry", b"{}")
            assert charger.subscribe(f"{topic}/cmd").is_failure
            cloud.publish(f"{topic}/cmd", b"go")
            assert [m.topic for m in cloud.drain(QUIET)] == [f"{topic}/cmd"]  # only its own
            assert charger.drain(QUIET) == []

            # Approved: disconnected at once, so that it reconnects under its full rights.
            setup.approve(waiting.device_id)
            assert charger.wait_disconnected(2.0)
        with setup.mqtt(waiting).connected() as charger:
            assert not charger.subscribe(f"{topic}/cmd").is_failure
            charger.publish(f"{topic}/telemetry", b"{}")
            assert cloud.expect().topic == f"{topic}/telemetry"

            # The status worker quarantines it again (a swapped board: its status names
            # another slave than enrolled) and tells the broker, as `ampfleet worker status`
            # wires it: from the next message on it may publish its status only.
            database = get_database(setup.app)
            with database.transaction() as session:
                stored = session.get(Device, waiting.device_id)
                assert stored is not None
                stored.chip_id, stored.slave_ids = "58cf79000001", ["58cf79000002"]
            settings = app_settings(setup.app)
            worker = StatusWorker(
                database,
                Endpoint(setup.server.host, setup.server.port, False, "unused", "unused"),
                "status-test",
                setup.directory,
                shared_subscriptions=False,
                on_quarantine=refresher(broker_admin(settings), database, passwords=False),
            )
            swapped = {"chip": "58cf79000001", "slaves": {"meter": "aabbccddeeff"}}
            worker.apply(StatusUpdate(waiting.device_id, True, None, "1.0.0", hardware=swapped))
            worker.rejects.close()
            with database.transaction() as session:
                stored = session.get(Device, waiting.device_id)
                assert stored is not None and stored.quarantine_reason
            charger.publish(f"{topic}/telemetry", b"{}")
            charger.publish(f"{topic}/status", b'{"online": true}')
            assert [m.topic for m in cloud.drain(QUIET)] == [f"{topic}/status"]
            cloud.publish(f"{topic}/cmd", b"go")
            cloud.drain(QUIET)
            assert charger.drain(QUIET) == []


def test_what_mosquitto_2_0_11_does_with_a_certificate_and_dynamic_security(
    setup: Setup,
) -> None:
    """The findings docs/mutual-tls.md builds on: at a certificate CONNECT dynamic security is
    not consulted (a disabled or missing client connects), only its ACLs hold the device;
    SIGHUP keeps connected clients."""
    device = setup.device()
    topic = f"af/{device.device_id}"
    control = setup.server.provisioner()

    def answers(*commands: dict[str, Any]) -> None:
        for answer in control.execute(list(commands)):
            assert "error" not in answer, answer

    with setup.service() as cloud:
        assert not cloud.subscribe(f"{topic}/#").is_failure
        # Disabled: kicked, but let in again with its rights (the flag is a password check).
        answers({"command": "disableClient", "username": device.device_id})
        with setup.mqtt(device).connected() as charger:
            charger.publish(f"{topic}/telemetry", b"{}")
            assert cloud.expect().topic == f"{topic}/telemetry"
        # Missing: let in with no rights at all (deny by default).
        answers({"command": "deleteClient", "username": device.device_id})
        with setup.mqtt(device).connected() as charger:
            charger.publish(f"{topic}/telemetry", b"{}")
            assert charger.subscribe(f"{topic}/cmd").is_failure
            assert cloud.drain(QUIET) == []
        # What the registry says comes back with a refresh (or a resync).
        settings = app_settings(setup.app)
        refresher(broker_admin(settings), get_database(setup.app), passwords=False)(
            device.device_id
        )
        with setup.mqtt(device).connected() as charger:
            setup.server.reload()  # re-reads the CRL; the session stays
            assert not charger.wait_disconnected(QUIET)
            charger.publish(f"{topic}/telemetry", b"{}")
            assert cloud.expect().topic == f"{topic}/telemetry"


def test_a_decommissioned_device_is_disconnected_and_refused(setup: Setup) -> None:
    device = setup.device()
    with setup.mqtt(device).connected() as charger:
        path = f"/devices/{device.device_id}"
        changed = setup.admin.patch(path, json={"state": "decommissioned"})
        assert changed.status_code == 200, changed.get_json()
        assert charger.wait_disconnected(2.0)  # its certificates revoked, its account gone
    deadline = time.monotonic() + 3
    while (answer := setup.handshake(device)) == "connack" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "alert_certificate_revoked" in answer, answer
