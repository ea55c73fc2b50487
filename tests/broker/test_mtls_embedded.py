"""Mutual TLS on the embedded broker: devices connect with certificates of the platform's PKI
(issued through the API), over real TLS, to a real embedded broker reading the API's records.

Refused at the handshake: a certificate from another CA, an expired one, none at all. Refused
at CONNECT: a client id that is not the certificate's CN, a suspended device, a revoked
certificate (which is also disconnected at once). A quarantined device publishes its status
and receives nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from broker.certauth import CertificateRegistry
from broker.mtls import TrustStore
from cloud.db import get_database
from cloud.devicelink.accounts import service_password
from cloud.devices import quarantine
from cloud.devices.models import Device
from cloud.pki import authorities
from cloud.pki import service as pki
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.link import AppFactory, app_settings, link_settings
from tests.mqtt import Mqtt, MqttError
from tests.pki.support import add_device, fresh_database, make_csr, pki_settings
from tests.services.amqtt_broker import EmbeddedBroker, free_port
from tests.services.mosquitto import make_tls_files

WATCHDOG = 3.0  # seconds: two rounds of the broker's re-check (1.5 s)


@dataclasses.dataclass(frozen=True)
class Setup:
    app: Flask
    admin: Client
    broker: EmbeddedBroker
    mtls_port: int
    server_ca: Path  # what devices trust the broker's server certificate with
    files: Path
    server_files: tuple[Path, Path]  # the broker's certificate and key


@dataclasses.dataclass(frozen=True)
class Credentials:
    device_id: str
    cert_file: Path
    key_file: Path
    serial: str = ""


@pytest.fixture(scope="module")
def setup(make_app: AppFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    app = make_app()
    settings = app_settings(app)
    files = tmp_path_factory.mktemp("mtls")
    ca, cert, key = make_tls_files(files)
    mtls_port = free_port()
    overrides = link_settings(
        settings.data_path,
        settings.database_url,
        broker_mtls_port=mtls_port,
        broker_tls_cert_file=str(cert),
        broker_tls_key_file=str(key),
    )
    admin = Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
    with EmbeddedBroker(overrides) as broker:
        yield Setup(app, admin, broker, mtls_port, ca, files, (cert, key))


def _key_files(
    files: Path, device_id: str, key: ec.EllipticCurvePrivateKey, pem: bytes
) -> Credentials:
    name = f"{device_id}-{secrets.token_hex(3)}"  # a device may hold several
    key_file, cert_file = files / f"{name}.key", files / f"{name}.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(pem)
    return Credentials(device_id, cert_file, key_file)


def new_device(setup: Setup) -> str:
    return str(Tenant.create(setup.admin).device(state="active")["id"])


def certified(setup: Setup, device_id: str | None = None) -> Credentials:
    """A device (a new one by default) with a certificate the API issued for its CSR."""
    device_id = device_id or new_device(setup)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    body = setup.admin.created(f"/devices/{device_id}/certificates", {"csr": csr})
    made = _key_files(setup.files, device_id, key, body["certificate_pem"].encode())
    return dataclasses.replace(made, serial=body["serial"])


def signed_by(
    setup: Setup,
    device_id: str,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> Credentials:
    """A client certificate for ``device_id`` made here, outside the PKI's records."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_CLIENT_AUTH]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return _key_files(setup.files, device_id, key, pem)


def tls_client(
    setup: Setup,
    credentials: Credentials | None,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    will: tuple[str, bytes] | None = None,
    clean_session: bool = True,
) -> Mqtt:
    client = Mqtt(
        setup.broker.host,
        setup.mtls_port,
        username,
        password,
        client_id=client_id,
        will=will,
        clean_session=clean_session,
    )
    client.client.tls_set(
        ca_certs=str(setup.server_ca),
        certfile=str(credentials.cert_file) if credentials else None,
        keyfile=str(credentials.key_file) if credentials else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )
    return client


def refused(client: Mqtt) -> bool:
    """Whether the broker turned the client away, at the handshake or at CONNECT."""
    try:
        return client.connect().is_failure
    except (MqttError, ssl.SSLError, OSError):
        return True
    finally:
        client.close()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """What the broker logged, asserting it logged no traceback."""
    assert not [r for r in caplog.records if r.exc_info], "a refusal is one line, no traceback"
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("broker."))


def service(setup: Setup) -> Mqtt:
    settings = app_settings(setup.app)
    return Mqtt(
        setup.broker.host,
        setup.broker.port,
        settings.broker_service_user,
        service_password(settings),
        client_id="svc-" + secrets.token_hex(3),
    )


def test_a_device_connects_with_its_certificate_and_publishes(setup: Setup) -> None:
    device = certified(setup)
    # Username and password are not looked at on this listener: the certificate decides.
    client = tls_client(setup, device, device.device_id, "someone-else", "not-a-password")
    with service(setup).connected() as cloud, client.connected():
        assert not cloud.subscribe("af/+/telemetry").is_failure
        assert not client.subscribe(f"af/{device.device_id}/cmd").is_failure
        assert client.subscribe(f"af/{device.device_id}/#").is_failure  # the ACL as ever
        client.publish(f"af/{device.device_id}/telemetry", b'{"p": 7}')
        message = cloud.expect()
        assert (message.topic, message.payload) == (
            f"af/{device.device_id}/telemetry",
            b'{"p": 7}',
        )
        cloud.publish(f"af/{device.device_id}/cmd", b"hello")
        assert client.expect().payload == b"hello"


def test_certificates_the_pki_did_not_issue_or_that_expired_fail_the_handshake(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device_id = new_device(setup)
    now = dt.datetime.now(dt.UTC)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")])
    other_ca = (
        x509.CertificateBuilder()
        .subject_name(other_name)
        .issuer_name(other_name)
        .public_key(other_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(other_key, hashes.SHA256())
    )
    foreign = signed_by(
        setup, device_id, other_ca, other_key, now - dt.timedelta(days=1), now + dt.timedelta(1)
    )
    assert refused(tls_client(setup, foreign, device_id))
    assert "client certificate unable to get local issuer certificate" in logged(caplog)
    settings = app_settings(setup.app)
    with get_database(setup.app).transaction() as session:
        ours = authorities.ensure(session, settings).devices
        ca_key = ours.key(session, settings)
    start = ours.certificate.not_valid_before_utc
    expired = signed_by(
        setup, device_id, ours.certificate, ca_key, start, start + dt.timedelta(minutes=1)
    )
    assert refused(tls_client(setup, expired, device_id))
    assert "client certificate certificate has expired" in logged(caplog)
    assert refused(tls_client(setup, None, device_id))  # no certificate at all
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in logged(caplog)
    # The same device with a certificate of its own gets in: the refusals were the certs'.
    assert not refused(tls_client(setup, certified(setup, device_id), device_id))


def test_the_client_id_is_the_certificate_cn(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device = certified(setup)
    other = new_device(setup)
    assert refused(tls_client(setup, device, other))
    assert f"client id '{other}' is not the certificate's CN" in logged(caplog)
    assert refused(tls_client(setup, device, "anything"))
    assert refused(tls_client(setup, device, ""))
    assert not refused(tls_client(setup, device, device.device_id))


def test_a_suspended_device_is_refused(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    device = certified(setup)
    path = f"/devices/{device.device_id}"
    assert setup.admin.patch(path, json={"state": "suspended"}).status_code == 200
    assert refused(tls_client(setup, device, device.device_id))
    assert "device is suspended" in logged(caplog)
    assert setup.admin.patch(path, json={"state": "active"}).status_code == 200
    assert not refused(tls_client(setup, device, device.device_id))


def test_a_revoked_certificate_is_disconnected_at_once_and_refused(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device = certified(setup)
    renewed = certified(setup, device.device_id)  # a second one in force (a renewal)
    with tls_client(setup, device, device.device_id).connected() as client:
        revoke = f"/certificates/{device.serial}/revoke"
        response = setup.admin.post(revoke, json={"reason": "keyCompromise"})
        assert response.status_code == 200, response.get_json()
        revoked_at = time.monotonic()
        assert client.wait_disconnected(WATCHDOG)
        assert time.monotonic() - revoked_at < WATCHDOG
    # The watchdog took the new CRL up in the same round: refused at the handshake.
    assert refused(tls_client(setup, device, device.device_id))
    assert "client certificate certificate revoked" in logged(caplog)
    # And at CONNECT, by the records, should a CRL be late (another host's revocation).
    certificates = CertificateRegistry(get_database(setup.app), app_settings(setup.app))
    der = x509.load_pem_x509_certificate(device.cert_file.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    decision = certificates.authenticate(der, device.device_id)
    assert decision.identity is None
    assert decision.reason == f"the certificate {device.serial} was revoked (keyCompromise)"
    # The device's other certificate is not touched.
    assert not refused(tls_client(setup, renewed, device.device_id))


def _set_quarantine(app: Flask, device_id: str, reason: str | None) -> None:
    with get_database(app).transaction() as session:
        device = session.get(Device, device_id)
        assert device is not None
        if reason is None:
            quarantine.release(session, device)
        else:
            quarantine.put(session, device, reason)


def test_a_quarantined_device_publishes_its_status_and_receives_nothing(setup: Setup) -> None:
    device = certified(setup)
    device_id = device.device_id
    status, cmd = f"af/{device_id}/status", f"af/{device_id}/cmd"
    _set_quarantine(setup.app, device_id, "not on an approved production whitelist")
    with service(setup).connected() as cloud:
        for channel in ("status", "telemetry", "events"):
            assert not cloud.subscribe(f"af/{device_id}/{channel}").is_failure
        client = tls_client(setup, device, device_id, will=(status, b"offline"))
        with client.connected():  # it may connect, with its status as its will
            assert client.subscribe(cmd).is_failure
            client.publish(f"af/{device_id}/telemetry", b"dropped")
            client.publish(status, b"online")
            assert [m.payload for m in cloud.drain()] == [b"online"]
            cloud.publish(cmd, b"not for a quarantined device")
            assert client.drain() == []
            # Approved: it is disconnected so that it reconnects and subscribes anew.
            _set_quarantine(setup.app, device_id, None)
            assert client.wait_disconnected(WATCHDOG)
        assert [m.payload for m in cloud.drain()] == [b"offline"]
        with tls_client(setup, device, device_id).connected() as client:
            assert not client.subscribe(cmd).is_failure
            # Quarantined while connected: from the next re-check on, it hears nothing.
            _set_quarantine(setup.app, device_id, "hardware IDs changed")
            time.sleep(2 * 1.5)
            assert not client.disconnected.is_set()
            cloud.publish(cmd, b"held back")
            assert client.drain() == []
            client.publish(f"af/{device_id}/events", b"dropped")
            client.publish(status, b"still here")
            assert [m.payload for m in cloud.drain()] == [b"still here"]


def test_what_waits_for_a_quarantined_device_is_held_until_it_is_approved(setup: Setup) -> None:
    device = certified(setup)
    device_id = device.device_id
    cmd, desired = f"af/{device_id}/cmd", f"af/{device_id}/config/desired"
    with tls_client(setup, device, device_id, clean_session=False).connected() as client:
        assert not client.subscribe(cmd).is_failure
        assert not client.subscribe(desired).is_failure
    _set_quarantine(setup.app, device_id, "hardware IDs changed")
    with service(setup).connected() as cloud:
        cloud.publish(cmd, b"queued while away")  # before the broker saw the quarantine
        cloud.client.publish(desired, b"retained", qos=1, retain=True)
        time.sleep(0.3)
        with tls_client(setup, device, device_id, clean_session=False).connected() as client:
            assert client.drain() == []  # neither the queue nor the retained configuration
            _set_quarantine(setup.app, device_id, None)
            assert client.wait_disconnected(WATCHDOG)
        with tls_client(setup, device, device_id, clean_session=False).connected() as client:
            got = sorted(m.payload for m in [client.expect(), client.expect()])
            assert got == [b"queued while away", b"retained"]


def test_a_password_device_that_was_never_approved_is_quarantined(setup: Setup) -> None:
    device_id = new_device(setup)
    password = setup.admin.post(f"/devices/{device_id}/credentials").get_json()["password"]
    with get_database(setup.app).transaction() as session:
        stored = session.get(Device, device_id)
        assert stored is not None
        stored.approved_at = None
    broker = setup.broker
    with Mqtt(broker.host, broker.port, device_id, password).connected() as client:
        assert client.subscribe(f"af/{device_id}/cmd").is_failure
        assert not client.disconnected.is_set()


def test_with_device_passwords_off_devices_come_in_by_certificate_only(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    device_id = new_device(setup)
    password = setup.admin.post(f"/devices/{device_id}/credentials").get_json()["password"]
    device = certified(setup, device_id)
    settings = app_settings(setup.app)
    mtls_port = free_port()
    overrides = link_settings(
        settings.data_path,
        settings.database_url,
        broker_device_passwords="false",
        broker_mtls_port=mtls_port,
        broker_tls_cert_file=str(setup.server_files[0]),
        broker_tls_key_file=str(setup.server_files[1]),
    )
    with EmbeddedBroker(overrides) as broker:
        assert refused(Mqtt(broker.host, broker.port, device_id, password))
        assert "device passwords are off" in logged(caplog)
        cloud = Mqtt(
            broker.host,
            broker.port,
            settings.broker_service_user,
            service_password(settings),
            client_id="svc-" + secrets.token_hex(3),
        )
        assert not refused(cloud)  # the cloud's own accounts keep their passwords
        other = dataclasses.replace(setup, broker=broker, mtls_port=mtls_port)
        assert not refused(tls_client(other, device, device_id))


def test_the_tls_context_is_rebuilt_only_for_a_new_crl(tmp_path: Path) -> None:
    database = fresh_database(tmp_path / "data")
    _, cert, key = make_tls_files(tmp_path / "tls")
    settings = pki_settings(
        tmp_path / "data",
        database.url,
        broker_tls_cert_file=str(cert),
        broker_tls_key_file=str(key),
    )
    trust = TrustStore(database, settings)
    try:
        trust.prepare()  # makes the CAs: the first CRL
        assert trust.crl_number == 1
        first = trust.context
        assert first.verify_mode is ssl.CERT_REQUIRED
        assert first.minimum_version is ssl.TLSVersion.TLSv1_2
        assert first.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
        assert not trust.reload() and trust.context is first
        with database.transaction() as session:
            device = add_device(session)
            issued = pki.issue_for_device(
                session, settings, device.id, make_csr(device.id), actor=None
            )
        assert not trust.reload()  # issuing changes no CRL
        with database.transaction() as session:
            pki.revoke(session, settings, serial=issued.serial, reason="superseded", actor=None)
        assert trust.reload() and trust.crl_number == 2 and trust.context is not first
    finally:
        database.engine.dispose()
