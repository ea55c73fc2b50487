"""Certificate renewal on the device (firmware/core/certs.py, the master): reading a
certificate's expiry and keys without an X.509 library, deciding when to ask, and a simulated
charger renewing over the in-memory broker, the test answering as the cloud does
(docs/device-contract.md 4.10)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.core import certs, contract
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.host.clock import START_MS
from firmware.host.storage import MemoryStorage

from .conftest import DEVICE
from .test_host import events

CA_KEY = ec.generate_private_key(ec.SECP256R1())
START = dt.datetime.fromtimestamp(START_MS / 1000, dt.UTC)
DAY_MS = 86_400_000


def pem_of(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certificate(public_key: ec.EllipticCurvePublicKey, not_after: dt.datetime) -> x509.Certificate:
    """A device certificate from the test CA."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .sign(CA_KEY, hashes.SHA256())
    )


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- the core --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        dt.datetime(2026, 9, 21, 0, 0, 1, tzinfo=dt.UTC),
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),  # UTCTime's last year
        dt.datetime(2050, 2, 28, 12, 30, 0, tzinfo=dt.UTC),  # GeneralizedTime from 2050
        dt.datetime(2096, 2, 29, 0, 0, 0, tzinfo=dt.UTC),
    ],
)
def test_the_expiry_and_key_are_read_from_the_der(moment: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(key.public_key(), moment)
    chain = pem(cert) + pem(certificate(CA_KEY.public_key(), moment))
    assert certs.not_after_ms(chain) == int(moment.timestamp() * 1000)
    assert certs.not_after_ms(chain.encode()) == int(moment.timestamp() * 1000)
    assert certs.certificate_key(chain) == spki(key.public_key())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]))
        .sign(key, hashes.SHA256())
    )
    assert certs.request_key(csr.public_bytes(serialization.Encoding.PEM)) == spki(key.public_key())
    assert certs.not_after_ms(None) is None and certs.not_after_ms(b"") is None


@pytest.mark.parametrize(
    "text",
    [
        "no pem here",
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_unreadable_certificates_raise_certificate_error(text: str) -> None:
    with pytest.raises(certs.CertificateError):
        certs.not_after_ms(text)


def test_renewal_asks_inside_the_window_once_per_connection() -> None:
    renewal = certs.Renewal(100 * DAY_MS, window_ms=30 * DAY_MS, retry_ms=DAY_MS)
    assert not renewal.due(69 * DAY_MS, 1)
    assert renewal.due(70 * DAY_MS, 1)
    renewal.asked(1)
    assert not renewal.due(70 * DAY_MS, 1) and renewal.due(70 * DAY_MS, 2)
    renewal.refused(70 * DAY_MS)
    assert not renewal.due(70 * DAY_MS + 1000, 2) and renewal.due(71 * DAY_MS, 2)
    renewal.installed(465 * DAY_MS, 71 * DAY_MS)
    assert not renewal.due(72 * DAY_MS, 3)
    renewal.installed(465 * DAY_MS, 436 * DAY_MS)  # the same expiry again: wait a day
    assert not renewal.due(436 * DAY_MS, 9) and renewal.due(437 * DAY_MS, 9)
    assert not certs.Renewal(None).due(10**13, 1)


# --- the master ------------------------------------------------------------------------------


class Cloud:
    """What the cloud's renewal handler answers, signed by the test CA."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.requests = broker.observe(contract.topic(DEVICE, contract.CERT_REQUEST))

    def request(self) -> contract.CertRequest:
        assert len(self.requests) == 1, self.requests
        return contract.decode_cert_request(self.requests.pop().payload)

    def answer(self, cert: x509.Certificate) -> None:
        chain = pem(cert) + pem(certificate(CA_KEY.public_key(), START + dt.timedelta(days=3650)))
        not_after = int(cert.not_valid_after_utc.timestamp() * 1000)
        payload = contract.encode_cert(pem(cert), chain, format(cert.serial_number, "x"), not_after)
        self.broker.publish(contract.topic(DEVICE, contract.CERT), payload)

    def refuse(self, error: str) -> None:
        self.broker.publish(
            contract.topic(DEVICE, contract.CERT), contract.encode_cert_error(error)
        )


def enrolled(days_left: float, make_keys: bool = True) -> tuple[SimCharger, MemoryBroker, Cloud]:
    """A charger enrolled with a key and a certificate that expires in ``days_left``."""
    key = ec.generate_private_key(ec.SECP256R1())
    storage = MemoryStorage("1.0.0")
    cert = certificate(key.public_key(), START + dt.timedelta(days=days_left))
    storage.put(certs.NVS_CERT, pem(cert).encode())
    storage.put(certs.NVS_KEY, pem_of(key))
    broker = MemoryBroker()
    cloud = Cloud(broker)
    charger = SimCharger(DEVICE, SimClock(), broker=broker, storage=storage, make_keys=make_keys)
    charger.run_for(15_000)
    assert charger.master.link.up
    return charger, broker, cloud


def test_a_board_that_makes_keys_renews_with_a_new_key() -> None:
    charger, broker, cloud = enrolled(10)
    old_key = charger.storage.get(certs.NVS_KEY)
    request = cloud.request()
    assert not request.recertify and request.csr is not None
    csr = x509.load_pem_x509_csr(request.csr.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE
    charger.run_for(10_000)
    assert cloud.requests == []  # once per connection
    issued = certificate(csr.public_key(), START + dt.timedelta(days=375))  # type: ignore[arg-type]
    cloud.answer(issued)
    charger.run_for(2_000)
    stored = charger.storage.get(certs.NVS_CERT)
    assert stored is not None and x509.load_pem_x509_certificates(stored)[0] == issued
    key = serialization.load_pem_private_key(charger.storage.get(certs.NVS_KEY) or b"", None)
    assert spki(key.public_key()) == spki(csr.public_key())  # type: ignore[arg-type]
    assert charger.storage.get(certs.NVS_KEY) != old_key
    assert charger.storage.get(certs.NVS_NEXT_KEY) is None
    [renewed] = events(broker, "certificate.renewed")
    assert renewed.data == {
        "serial": format(issued.serial_number, "x"),
        "not_after": int(issued.not_valid_after_utc.timestamp() * 1000),
    }
    charger.power_cycle()  # the next boot: the new certificate, nothing to renew
    charger.run_for(30_000)
    assert charger.master.link.up and cloud.requests == []


def test_a_board_that_cannot_make_keys_asks_to_recertify_and_keeps_its_key() -> None:
    charger, broker, cloud = enrolled(5, make_keys=False)
    key = serialization.load_pem_private_key(charger.storage.get(certs.NVS_KEY) or b"", None)
    assert cloud.request().recertify
    cloud.answer(certificate(key.public_key(), START + dt.timedelta(days=370)))  # type: ignore[arg-type]
    charger.run_for(2_000)
    assert certs.not_after_ms(charger.storage.get(certs.NVS_CERT)) == START_MS + 370 * DAY_MS
    assert len(events(broker, "certificate.renewed")) == 1


def test_refusals_and_foreign_keys_install_nothing_and_wait_a_day() -> None:
    charger, broker, cloud = enrolled(10)
    before = charger.storage.get(certs.NVS_CERT)
    request = cloud.request()
    cloud.refuse("not due")
    stranger = ec.generate_private_key(ec.SECP256R1())
    cloud.answer(certificate(stranger.public_key(), START + dt.timedelta(days=375)))
    charger.run_for(2_000)
    assert charger.storage.get(certs.NVS_CERT) == before
    assert [e.data["error"] for e in events(broker, "certificate.refused")] == [
        "not due",
        "the certificate is for another key",
    ]
    charger.power_cycle()
    charger.run_for(30_000)
    assert cloud.requests == []  # a day has not passed
    charger.run_for(DAY_MS, step_ms=600_000)
    again = cloud.request()
    assert again.csr == request.csr  # the pending key, asked for again


def test_a_power_cut_between_certificate_and_key_is_finished_at_boot() -> None:
    charger, _, cloud = enrolled(10)
    csr = x509.load_pem_x509_csr((cloud.request().csr or "").encode())
    issued = certificate(csr.public_key(), START + dt.timedelta(days=375))  # type: ignore[arg-type]
    charger.storage.put(certs.NVS_CERT, pem(issued).encode())  # ...and the power went
    next_key = charger.storage.get(certs.NVS_NEXT_KEY)
    charger.power_cycle()
    assert charger.storage.get(certs.NVS_KEY) == next_key
    assert charger.storage.get(certs.NVS_NEXT_CSR) is None
