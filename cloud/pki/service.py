"""What the platform asks of its PKI: sign a device's CSR, re-certify its key, revoke, the CA
chain, and the state of a certificate for the brokers.

Every function works in the caller's session and leaves the commit to it; each change is
audited in that same transaction. A refused request writes nothing: the CSR is judged
(``cloud.pki.csr``) before anything touches the records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID
from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.devices.models import Device, LifecycleState
from cloud.identity.principal import Principal
from cloud.pki import (
    AlreadyRevokedError,
    CertificateNotFoundError,
    CertificateRefusedError,
    DeviceNotEligibleError,
    NoCurrentCertificateError,
    RevocationReasonError,
    authorities,
    crl,
    csr,
    issuance,
    normalize_serial,
)
from cloud.pki.models import CertificateState, DeviceCertificate
from cloud.settings import Settings

CERTIFICATES_ISSUED = Counter(
    "ampfleet_certificates_issued", "Device certificates the platform PKI issued."
)
CERTIFICATES_REVOKED = Counter(
    "ampfleet_certificates_revoked", "Device certificates revoked, by reason.", ["reason"]
)


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate just issued: what a device installs."""

    serial: str
    certificate_pem: str
    chain_pem: str  # the certificate, the device CA, the root
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str


def issue_for_device(
    session: Session, settings: Settings, device_id: str, csr_pem: str, *, actor: Principal | None
) -> Issued:
    """Sign ``csr_pem`` for ``device_id``; CsrRejectedError (nothing written) when the CSR
    fails a check, DeviceNotEligibleError when the device is unknown or decommissioned."""
    request = csr.accept(csr_pem, device_id)
    device = _eligible(session, device_id)
    return _issue(session, settings, device, request.public_key(), actor, "certificate.issue", {})


def recertify(
    session: Session, settings: Settings, device_id: str, *, actor: Principal | None
) -> Issued:
    """A new certificate for the public key of the device's latest certificate that is not
    revoked (expired or not): for boards that cannot make a new key. The old certificate stays
    valid until it expires."""
    device = _eligible(session, device_id)
    previous = session.scalar(
        select(DeviceCertificate)
        .where(
            DeviceCertificate.device_id == device_id,
            DeviceCertificate.state == CertificateState.ISSUED,
        )
        .order_by(DeviceCertificate.not_after.desc(), DeviceCertificate.id.desc())
        .limit(1)
    )
    if previous is None:
        raise NoCurrentCertificateError(device_id)
    key = x509.load_pem_x509_certificate(previous.certificate_pem.encode()).public_key()
    details = {"previous_serial": previous.serial}
    return _issue(session, settings, device, key, actor, "certificate.recertify", details)


def revoke(
    session: Session,
    settings: Settings,
    *,
    serial: str | None = None,
    device_id: str | None = None,
    reason: str,
    actor: Principal | None,
) -> list[str]:
    """Revoke one certificate (``serial``) or every certificate in force of a device
    (``device_id``); the serials revoked. A new CRL follows in the same transaction, its files
    once it commits."""
    if (serial is None) == (device_id is None):
        raise ValueError("revoke takes a serial or a device id")
    if reason not in issuance.REVOCATION_REASONS:
        raise RevocationReasonError(reason, tuple(issuance.REVOCATION_REASONS))
    if serial is not None:
        normal = normalize_serial(serial)
        found = (
            session.scalar(
                select(DeviceCertificate)
                .where(DeviceCertificate.serial == normal)
                .with_for_update()
            )
            if normal
            else None
        )
        if found is None:
            raise CertificateNotFoundError(serial)
        if found.state is CertificateState.REVOKED:
            raise AlreadyRevokedError(found.serial)
        targets = [found]
    else:
        targets = list(
            session.scalars(
                select(DeviceCertificate)
                .where(
                    DeviceCertificate.device_id == device_id,
                    DeviceCertificate.state == CertificateState.ISSUED,
                )
                .order_by(DeviceCertificate.id)
                .with_for_update()
            )
        )
    now = utcnow()
    for certificate in targets:
        certificate.state = CertificateState.REVOKED
        certificate.revoked_at = now
        certificate.revocation_reason = reason
        device = session.get(Device, certificate.device_id)
        record(
            session,
            actor,
            "certificate.revoke",
            "device",
            certificate.device_id,
            device.organization_id if device is not None else None,
            {"serial": certificate.serial, "reason": reason},
        )
    if targets:
        session.flush()
        crl.regenerate(session, settings)
        CERTIFICATES_REVOKED.labels(reason).inc(len(targets))
    return [c.serial for c in targets]


def ca_chain_pem(session: Session, settings: Settings) -> str:
    """The device CA then the root, PEM: what a broker trusts for device certificates."""
    return authorities.ensure(session, settings).chain_pem


def current_certificate(session: Session, device_id: str) -> DeviceCertificate | None:
    """The device's newest certificate in force (issued, not revoked, not expired)."""
    now = utcnow()
    return session.scalar(
        select(DeviceCertificate)
        .where(
            DeviceCertificate.device_id == device_id,
            DeviceCertificate.state == CertificateState.ISSUED,
            DeviceCertificate.not_before <= now,
            DeviceCertificate.not_after > now,
        )
        .order_by(DeviceCertificate.not_after.desc(), DeviceCertificate.id.desc())
        .limit(1)
    )


def certificate_state(session: Session, serial: str) -> CertificateState | None:
    """``issued`` or ``revoked`` for a certificate of ours; None for a serial we never issued."""
    normal = normalize_serial(serial)
    if normal is None:
        return None
    return session.scalar(select(DeviceCertificate.state).where(DeviceCertificate.serial == normal))


def is_revoked(session: Session, serial: str) -> bool:
    """True when the certificate ``serial`` is ours and revoked."""
    return certificate_state(session, serial) is CertificateState.REVOKED


def check_presented(
    session: Session,
    settings: Settings,
    certificate: x509.Certificate | str | bytes,
    device_id: str | None = None,
    now: dt.datetime | None = None,
) -> DeviceCertificate:
    """The record of a certificate a device presents (PEM, DER or parsed), when it is one of
    ours, in force, and (with ``device_id``) names that device; CertificateRefusedError naming
    what is wrong otherwise. For brokers that verify client certificates themselves."""
    if not isinstance(certificate, x509.Certificate):
        data = certificate.encode() if isinstance(certificate, str) else certificate
        try:
            certificate = (
                x509.load_pem_x509_certificate(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(data)
            )
        except ValueError as exc:
            raise CertificateRefusedError(f"the certificate cannot be read: {exc}") from exc
    found = authorities.existing(session)
    if found is None:
        raise CertificateRefusedError("the platform has issued no certificate yet")
    try:
        certificate.verify_directly_issued_by(found.devices.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateRefusedError(
            "the certificate was not issued by the platform's device CA"
        ) from exc
    stored = session.scalar(
        select(DeviceCertificate).where(
            DeviceCertificate.serial == issuance.serial_hex_of(certificate)
        )
    )
    if stored is None or stored.fingerprint != issuance.fingerprint(certificate):
        raise CertificateRefusedError("the certificate is not in the platform's records")
    if stored.state is CertificateState.REVOKED:
        raise CertificateRefusedError(
            f"the certificate {stored.serial} was revoked ({stored.revocation_reason})"
        )
    now = now or utcnow()
    if not stored.not_before <= now < stored.not_after:
        raise CertificateRefusedError(
            f"the certificate {stored.serial} is valid from {stored.not_before.isoformat()} "
            f"to {stored.not_after.isoformat()}, not now"
        )
    if device_id is not None and stored.device_id != device_id:
        raise CertificateRefusedError(
            f"the certificate names the device {stored.device_id}, not {device_id}"
        )
    return stored


def _eligible(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceNotEligibleError(device_id, "no such device")
    if device.state is LifecycleState.DECOMMISSIONED:
        raise DeviceNotEligibleError(device_id, "decommissioned devices get no certificates")
    return device


def _issue(
    session: Session,
    settings: Settings,
    device: Device,
    public_key: CertificatePublicKeyTypes,
    actor: Principal | None,
    action: str,
    details: dict[str, str],
) -> Issued:
    found = authorities.ensure(session, settings)
    certificate = issuance.device_certificate(
        public_key,
        device.id,
        found.devices.certificate,
        found.devices.key(session, settings),
        utcnow(),
        dt.timedelta(days=settings.pki_certificate_days),
    )
    stored = DeviceCertificate(
        serial=issuance.serial_hex_of(certificate),
        device_id=device.id,
        authority=found.devices.name,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint=issuance.fingerprint(certificate),
        public_key_sha256=issuance.public_key_sha256(public_key),
        state=CertificateState.ISSUED,
        certificate_pem=issuance.pem(certificate),
    )
    session.add(stored)
    session.flush()
    CERTIFICATES_ISSUED.inc()
    record(
        session,
        actor,
        action,
        "device",
        device.id,
        device.organization_id,
        {
            "serial": stored.serial,
            "fingerprint": stored.fingerprint,
            "not_after": stored.not_after.isoformat(),
            **details,
        },
    )
    return Issued(
        serial=stored.serial,
        certificate_pem=stored.certificate_pem,
        chain_pem=stored.certificate_pem + found.chain_pem,
        not_before=stored.not_before,
        not_after=stored.not_after,
        fingerprint=stored.fingerprint,
    )


def common_name(certificate: x509.Certificate) -> str | None:
    """The CN of a certificate's subject, if it has exactly one."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None
