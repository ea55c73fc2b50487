"""The PKI service on a real SQLite records database: issuance and its certificate profile,
the chain, re-certification, revocation and the CRL, keys sealed with the KEK."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from cloud.audit.models import AuditEntry
from cloud.db import Database
from cloud.devices.models import LifecycleState
from cloud.pki import (
    AlreadyRevokedError,
    CertificateRefusedError,
    CsrRejectedError,
    DeviceNotEligibleError,
    KeyEncryptionError,
    NoCurrentCertificateError,
    RevocationReasonError,
    authorities,
    crl,
    keystore,
    service,
)
from cloud.pki.models import CertificateState, DeviceCertificate, PkiAuthority, PkiKey
from cloud.settings import Settings
from tests.ocpp.pki import Authority
from tests.pki.support import add_device, fresh_database, make_csr, pki_settings, rsa_key


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return fresh_database(tmp_path / "data")


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return pki_settings(tmp_path / "data", database.url)


def test_a_certificate_is_issued_with_the_device_profile_inside_the_chain(
    database: Database, settings: Settings
) -> None:
    with database.transaction() as session:
        device = add_device(session)
        issued = service.issue_for_device(
            session, settings, device.id, make_csr(device.id), actor=None
        )
    leaf, devices_ca, root = x509.load_pem_x509_certificates(issued.chain_pem.encode())
    assert issued.certificate_pem == leaf.public_bytes(serialization.Encoding.PEM).decode()
    assert leaf.subject.rfc4514_string() == f"CN={device.id}"
    leaf.verify_directly_issued_by(devices_ca)
    devices_ca.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    # Validity inside the issuer's.
    assert devices_ca.not_valid_before_utc <= leaf.not_valid_before_utc
    assert leaf.not_valid_after_utc <= devices_ca.not_valid_after_utc
    assert issued.not_after - issued.not_before >= dt.timedelta(days=365)
    ext = leaf.extensions
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [x509.OID_CLIENT_AUTH]
    ski = devices_ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha256"
    assert leaf.serial_number.bit_length() > 64  # random (RFC 5280 4.1.2.2)
    assert devices_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with database.transaction() as session:
        stored = session.scalar(
            select(DeviceCertificate).where(DeviceCertificate.serial == issued.serial)
        )
        assert stored is not None and stored.state is CertificateState.ISSUED
        assert stored.fingerprint == issued.fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
        assert service.current_certificate(session, device.id) is not None
        assert service.certificate_state(session, issued.serial) is CertificateState.ISSUED
        assert (
            service.ca_chain_pem(session, settings)
            == issued.chain_pem.split("-----END CERTIFICATE-----\n", 1)[1]
        )
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.object_id == device.id)
        ).all()
        assert actions == ["certificate.issue"]
        assert service.check_presented(session, settings, leaf, device.id).serial == issued.serial


def test_a_refused_csr_writes_nothing(database: Database, settings: Settings) -> None:
    with database.transaction() as session:
        device = add_device(session)
    for csr_pem in (make_csr("af-other"), make_csr(device.id, rsa_key(1024))):
        with database.transaction() as session, pytest.raises(CsrRejectedError):
            service.issue_for_device(session, settings, device.id, csr_pem, actor=None)
    with database.transaction() as session:
        # Not even the authorities: the CSR is judged before the records are touched.
        assert session.scalars(select(PkiKey)).all() == []
        assert session.scalars(select(DeviceCertificate)).all() == []
        assert session.scalars(select(AuditEntry)).all() == []


def test_unknown_and_decommissioned_devices_get_nothing(
    database: Database, settings: Settings
) -> None:
    with database.transaction() as session:
        gone = add_device(session, LifecycleState.DECOMMISSIONED)
    for device_id in ("af-nobody", gone.id):
        with database.transaction() as session, pytest.raises(DeviceNotEligibleError):
            service.issue_for_device(session, settings, device_id, make_csr(device_id), actor=None)


def test_recertify_keeps_the_key_and_revocation_lists_it_in_the_next_crl(
    database: Database, settings: Settings
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with database.transaction() as session:
        device = add_device(session)
        with pytest.raises(NoCurrentCertificateError):
            service.recertify(session, settings, device.id, actor=None)
        first = service.issue_for_device(
            session, settings, device.id, make_csr(device.id, key), actor=None
        )
    with database.transaction() as session:
        number = crl.current(session, settings).number
        second = service.recertify(session, settings, device.id, actor=None)
    new = x509.load_pem_x509_certificate(second.certificate_pem.encode())
    assert new.public_key() == key.public_key()
    assert second.serial != first.serial
    with database.transaction() as session:
        with pytest.raises(RevocationReasonError):
            service.revoke(session, settings, serial=first.serial, reason="boredom", actor=None)
        revoked = service.revoke(
            session, settings, serial=first.serial.upper(), reason="keyCompromise", actor=None
        )
        assert revoked == [first.serial]
    assert Path(settings.pki_crl_file).exists()  # written once the revocation committed
    written = x509.load_pem_x509_crl(Path(settings.pki_crl_file).read_bytes())
    with database.transaction() as session:
        assert service.is_revoked(session, first.serial)
        assert not service.is_revoked(session, second.serial)
        with pytest.raises(AlreadyRevokedError):
            service.revoke(session, settings, serial=first.serial, reason="superseded", actor=None)
        row = crl.current(session, settings)
        found = authorities.existing(session)
        assert found is not None
    assert row.number == number + 1
    listed = x509.load_der_x509_crl(row.crl_der)
    assert listed.public_bytes(serialization.Encoding.DER) == written.public_bytes(
        serialization.Encoding.DER
    )
    assert listed.is_signature_valid(found.devices.certificate.public_key())  # type: ignore[arg-type]
    assert listed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    entry = listed.get_revoked_certificate_by_serial_number(int(first.serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert listed.get_revoked_certificate_by_serial_number(int(second.serial, 16)) is None
    assert listed.next_update_utc is not None and listed.next_update_utc > listed.last_update_utc
    assert Path(settings.pki_ca_file).read_text() == found.chain_pem
    # All of a device's certificates at once; a revoked one is refused when presented.
    with database.transaction() as session:
        assert service.revoke(
            session, settings, device_id=device.id, reason="cessationOfOperation", actor=None
        ) == [second.serial]
        with pytest.raises(CertificateRefusedError, match="was revoked"):
            service.check_presented(session, settings, second.certificate_pem)
        assert crl.stored(session).number == number + 2  # type: ignore[union-attr]


def test_a_certificate_from_another_ca_is_not_ours(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    stranger = Authority(tmp_path, "stranger")
    cert_file, _ = stranger.issue("af-0123456789ab")
    with database.transaction() as session:
        authorities.ensure(session, settings)
        with pytest.raises(CertificateRefusedError, match="not issued by the platform"):
            service.check_presented(session, settings, Path(cert_file).read_text())


def test_the_crl_is_renewed_when_half_of_it_has_passed(
    database: Database, settings: Settings
) -> None:
    with database.transaction() as session:
        first = crl.current(session, settings)
        number, next_update = first.number, first.next_update
    later = next_update - dt.timedelta(days=settings.pki_crl_days) / 2 + dt.timedelta(seconds=1)
    with database.transaction() as session:
        assert not crl.refresh_if_due(session, settings, later - dt.timedelta(hours=1))
        assert crl.refresh_if_due(session, settings, later)
        assert crl.stored(session).number == number + 1  # type: ignore[union-attr]
    keeper = crl.CrlKeeper(database, settings)
    keeper.check(later)
    assert keeper.written == number + 1
    assert Path(settings.pki_crl_file).exists()


def test_authorities_are_made_once(database: Database, settings: Settings) -> None:
    with database.transaction() as session:
        made = authorities.ensure(session, settings)
    with database.transaction() as session:
        again = authorities.ensure(session, settings)
        assert again.devices.certificate == made.devices.certificate
        assert len(session.scalars(select(PkiAuthority)).all()) == 2


def test_two_processes_making_the_authorities_at_once_agree(tmp_path: Path) -> None:
    """Both see no authority, both make one: the second's insert loses and takes the first's."""
    database = fresh_database(tmp_path / "data")
    settings = pki_settings(tmp_path / "data", database.url)
    first, second = database.session(), database.session()
    try:
        assert authorities.existing(second) is None  # the second looked before the first wrote
        made = authorities.ensure(first, settings)
        first.commit()
        # The second process's keys and authorities lose on the unique names.
        taken = authorities.ensure(second, settings)
        second.commit()
        assert taken.chain_pem == made.chain_pem
    finally:
        first.close()
        second.close()


def test_signing_keys_by_name(database: Database, settings: Settings) -> None:
    with database.transaction() as session:
        key = keystore.signing_key(session, settings, "guest-credentials")
        public = keystore.public_key_der(session, settings, "guest-credentials")
    assert key.curve.name == "secp256r1"
    assert public == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with database.transaction() as session:
        assert keystore.signing_key(session, settings, "guest-credentials").private_numbers() == (
            key.private_numbers()
        )


def test_keys_are_not_readable_without_the_kek(
    database: Database, settings: Settings, tmp_path: Path
) -> None:
    with database.transaction() as session:
        device = add_device(session)
        service.issue_for_device(session, settings, device.id, make_csr(device.id), actor=None)
        keys = {
            name: keystore.signing_key(session, settings, name)
            for name in session.scalars(select(PkiKey.name))
        }
        service.revoke(session, settings, device_id=device.id, reason="superseded", actor=None)
    assert set(keys) == {authorities.ROOT_KEY, authorities.DEVICES_KEY}
    database.engine.dispose()
    # Every byte of the data directory (the database and its WAL, the CRL and CA files): no
    # private key in any encoding.
    blobs = [p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(b"-----BEGIN X509 CRL-----" in blob for blob in blobs)
    for key in keys.values():
        secret = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for blob in blobs:
            assert secret not in blob and der not in blob and pem not in blob
            assert secret.hex().encode() not in blob
            assert b"PRIVATE KEY" not in blob
    # Another KEK opens nothing, and says so.
    other = pki_settings(tmp_path / "data", database.url, pki_kek="A" * 43 + "=")
    with database.transaction() as session, pytest.raises(KeyEncryptionError, match="another"):
        keystore.signing_key(session, other, authorities.DEVICES_KEY)
