"""Certificate renewal over the device contract (docs/device-contract.md 4.10): the renewal
worker on the embedded broker (password authentication, as the other worker tests), a device
that publishes ``cert/request`` and reads ``cert`` as a charger would, and the records."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from cloud.audit.models import AuditEntry
from cloud.db import get_database
from cloud.pki import service
from cloud.pki.models import CertificateState, DeviceCertificate
from cloud.pki.renewal import RenewalWorker
from firmware.core import certs, contract
from firmware.host.fleet import Fleet
from firmware.host.storage import MemoryStorage
from tests.link import Link, app_settings, running_worker
from tests.pki.support import make_csr

# The embedded broker only: the worker's broker side is ThreadedLink's, tested on both.
pytestmark = pytest.mark.parametrize("link", ["embedded"], indirect=True)


class Device:
    """A charger on the broker with a certificate in force, asking as the firmware does."""

    def __init__(self, link: Link, days: int) -> None:
        self.id, password = link.device()
        self.key = ec.generate_private_key(ec.SECP256R1())
        # Enrolled with a certificate of ``days``: 10 is inside the 30-day window, 365 is not.
        settings = dataclasses.replace(app_settings(link.app), pki_certificate_days=days)
        with get_database(link.app).transaction() as session:
            self.first = service.issue_for_device(
                session, settings, self.id, make_csr(self.id, self.key), actor=None
            ).serial
        self.mqtt = link.mqtt(self.id, password).connected()
        assert not self.mqtt.subscribe(contract.topic(self.id, contract.CERT)).is_failure

    def ask(self, payload: bytes) -> contract.CertReply:
        """Publish a request, return the answer."""
        self.mqtt.publish(contract.topic(self.id, contract.CERT_REQUEST), payload)
        message = self.mqtt.expect(20)
        assert message.topic == contract.topic(self.id, contract.CERT)
        return contract.decode_cert(message.payload)


@pytest.fixture
def due(link: Link, tmp_path: Path) -> Iterator[RenewalWorker]:
    """A renewal worker with the default window (30 days), no throttle."""
    settings = app_settings(link.app)
    assert settings.pki_renew_before_days == 30
    with running_worker(
        link, RenewalWorker, "certs", tmp_path, settings=settings, min_interval=0
    ) as worker:
        yield worker


@pytest.fixture
def device(link: Link) -> Iterator[Device]:
    """A device whose certificate expires in 10 days: due for renewal."""
    made = Device(link, 10)
    yield made
    made.mqtt.close()


@pytest.fixture
def fresh(link: Link) -> Iterator[Device]:
    """A device whose certificate has a year to run: not due."""
    made = Device(link, 365)
    yield made
    made.mqtt.close()


def certificates(link: Link, device_id: str) -> list[tuple[str, str]]:
    """(serial, public key hash) of every certificate of the device, oldest first."""
    with get_database(link.app).transaction() as session:
        rows = session.execute(
            select(DeviceCertificate.serial, DeviceCertificate.public_key_sha256)
            .where(DeviceCertificate.device_id == device_id)
            .order_by(DeviceCertificate.id)
        )
        return [(serial, key) for serial, key in rows]


def public_pem(key: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_new_key_is_certified_recorded_and_sent_once(
    link: Link, due: RenewalWorker, device: Device
) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    request = contract.encode_cert_request(make_csr(device.id, new_key))
    reply = device.ask(request)
    assert reply.ok, reply.error
    certificate = x509.load_pem_x509_certificate(reply.certificate.encode())  # type: ignore[union-attr]
    assert public_pem(certificate) == public_pem(new_key)
    chain = x509.load_pem_x509_certificates(reply.chain.encode())  # type: ignore[union-attr]
    assert len(chain) == 3 and chain[0] == certificate
    assert reply.not_after == int(certificate.not_valid_after_utc.timestamp() * 1000)
    records = certificates(link, device.id)
    assert [serial for serial, _ in records] == [device.first, reply.serial]
    with get_database(link.app).transaction() as session:
        stored = session.scalar(
            select(DeviceCertificate).where(DeviceCertificate.serial == reply.serial)
        )
        assert stored is not None and stored.state is CertificateState.ISSUED
        audited = session.scalar(
            select(func.count()).where(
                AuditEntry.action == "certificate.issue", AuditEntry.object_id == device.id
            )
        )
        assert audited == 2  # enrollment's, then the renewal's
    # The answer was lost, the device asks again with the same CSR: the same certificate.
    again = device.ask(request)
    assert (again.serial, again.certificate) == (reply.serial, reply.certificate)
    assert certificates(link, device.id) == records
    assert due.outcomes == {"issued": 1, "resent": 1}


def test_recertification_keeps_the_key(link: Link, due: RenewalWorker, device: Device) -> None:
    reply = device.ask(contract.encode_cert_request(recertify=True))
    assert reply.ok, reply.error
    certificate = x509.load_pem_x509_certificate(reply.certificate.encode())  # type: ignore[union-attr]
    assert public_pem(certificate) == public_pem(device.key)
    records = certificates(link, device.id)
    assert len(records) == 2 and records[0][1] == records[1][1]
    # Asked again: the newest certificate of that key is not due, it is sent again.
    assert device.ask(contract.encode_cert_request(recertify=True)).serial == reply.serial
    assert due.outcomes == {"recertified": 1, "resent": 1}


@pytest.mark.parametrize(
    "bad",
    ["other CN", "bad signature", "rsa-1024"],
)
def test_a_bad_csr_is_refused_with_its_reason_and_nothing_written(
    link: Link, due: RenewalWorker, device: Device, bad: str
) -> None:
    from tests.pki.support import rsa_key

    if bad == "other CN":
        pem, reason = make_csr(device.id + "x"), "CN"
    elif bad == "bad signature":
        good = x509.load_pem_x509_csr(make_csr(device.id).encode())
        der = bytearray(good.public_bytes(serialization.Encoding.DER))
        der[-3] ^= 0x55  # inside the signature
        pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
        reason = "signature"
    else:
        pem, reason = make_csr(device.id, rsa_key(1024)), "1024"
    reply = device.ask(contract.encode_cert_request(pem))
    assert not reply.ok and reason in (reply.error or "")
    assert [serial for serial, _ in certificates(link, device.id)] == [device.first]
    assert due.outcomes == {"refused": 1}


def test_a_new_key_before_the_window_is_refused(
    link: Link, due: RenewalWorker, fresh: Device
) -> None:
    device = fresh
    reply = device.ask(contract.encode_cert_request(make_csr(device.id)))
    assert not reply.ok and "not due" in (reply.error or "")
    # The same key outside the window: the certificate it holds, nothing issued.
    same = device.ask(contract.encode_cert_request(make_csr(device.id, device.key)))
    assert same.ok and same.serial == device.first
    assert [serial for serial, _ in certificates(link, device.id)] == [device.first]


def test_a_device_without_a_certificate_in_force_is_refused(
    link: Link, due: RenewalWorker, device: Device
) -> None:
    with get_database(link.app).transaction() as session:
        service.revoke(
            session, app_settings(link.app), device_id=device.id, reason="superseded", actor=None
        )
    reply = device.ask(contract.encode_cert_request(recertify=True))
    assert not reply.ok and "no certificate in force" in (reply.error or "")
    assert len(certificates(link, device.id)) == 1


def test_malformed_requests_are_counted_answered_and_the_worker_goes_on(
    link: Link, due: RenewalWorker, device: Device, tmp_path: Path
) -> None:
    for payload in (b"{not json", b'{"v":1}', b'{"v":1,"csr":"x","recertify":true}'):
        reply = device.ask(payload)
        assert not reply.ok and "breaks the contract" in (reply.error or "")
    assert due.outcomes == {"malformed": 3}
    assert due.rejects.counts == {"not_json": 1, "missing_field": 1, "bad_value": 1}
    kept = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [r["topic"] for r in kept] == [contract.topic(device.id, contract.CERT_REQUEST)] * 3
    assert device.ask(contract.encode_cert_request(recertify=True)).ok  # still answering


def test_a_device_asking_too_often_is_dropped(link: Link, fresh: Device, tmp_path: Path) -> None:
    device = fresh
    with running_worker(
        link, RenewalWorker, "certs", tmp_path, settings=app_settings(link.app), min_interval=60
    ) as worker:
        assert device.ask(contract.encode_cert_request(recertify=True)).ok  # resent
        device.mqtt.publish(
            contract.topic(device.id, contract.CERT_REQUEST),
            contract.encode_cert_request(recertify=True),
        )
        assert device.mqtt.drain(1.0) == []
        assert worker.outcomes == {"resent": 1, "throttled": 1}


def test_a_simulated_charger_renews_through_the_worker(
    link: Link, due: RenewalWorker, tmp_path: Path
) -> None:
    """Both halves together: the real firmware core (a simulated charger over gmqtt, password
    authentication) asks the real worker, and installs what the PKI issued."""
    device_id, password = link.device()
    key = ec.generate_private_key(ec.SECP256R1())
    settings = dataclasses.replace(app_settings(link.app), pki_certificate_days=10)
    with get_database(link.app).transaction() as session:
        first = service.issue_for_device(
            session, settings, device_id, make_csr(device_id, key), actor=None
        )
    storage = MemoryStorage("1.0.0")
    storage.put(certs.NVS_CERT, first.chain_pem.encode())
    storage.put(
        certs.NVS_KEY,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    # Seed 88: a short power-on wait; stepped every 0.5 s so that nothing waits on the fleet.
    fleet = Fleet(
        [(device_id, password)],
        link.host,
        link.port,
        storages=[storage],
        seed=88,
        tick_ms=50,
        idle_step_ms=500,
        boot_rate=1000,
    )

    async def run() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(fleet.run(stop))
        deadline = time.monotonic() + 20
        while storage.get(certs.NVS_CERT) == first.chain_pem.encode():
            assert time.monotonic() < deadline, "no certificate installed"
            await asyncio.sleep(0.05)
        stop.set()
        await running

    asyncio.run(run())
    installed = x509.load_pem_x509_certificates(storage.get(certs.NVS_CERT) or b"")
    records = certificates(link, device_id)
    assert len(records) == 2 and records[0][0] == first.serial
    assert format(installed[0].serial_number, "x") == records[1][0]
    new_key = serialization.load_pem_private_key(storage.get(certs.NVS_KEY) or b"", None)
    assert public_pem(installed[0]) == public_pem(new_key)  # type: ignore[arg-type]
    assert public_pem(new_key) != public_pem(key)  # type: ignore[arg-type]
    assert due.outcomes == {"issued": 1}
