"""The platform's two certificate authorities, made on first use: ``root`` (self-signed, its
key used only to sign the device CA) and ``devices`` (the issuing CA of every device
certificate and of the CRL), with the first, empty CRL.

Idempotent and safe when two processes start at once: the keys and the authorities are
inserted under unique names in savepoints; the loser of a race rolls back its own and reads
the winner's (``cloud.pki.keystore``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.pki import issuance, keystore
from cloud.pki.models import PkiAuthority, PkiCrl
from cloud.settings import Settings

ROOT = "root"
DEVICES = "devices"
ROOT_KEY = "pki-root-ca"
DEVICES_KEY = "pki-devices-ca"


@dataclasses.dataclass(frozen=True)
class Authority:
    """A CA of the platform: its certificate and the name of its sealed key."""

    name: str
    certificate: x509.Certificate
    key_name: str

    @property
    def pem(self) -> str:
        """Its certificate, PEM."""
        return issuance.pem(self.certificate)

    def key(self, session: Session, settings: Settings) -> ec.EllipticCurvePrivateKey:
        """Its private key, opened with the KEK."""
        return keystore.signing_key(session, settings, self.key_name)


@dataclasses.dataclass(frozen=True)
class Authorities:
    """The root and the device CA."""

    root: Authority
    devices: Authority

    @property
    def chain_pem(self) -> str:
        """The device CA then the root: what a broker trusts (``cafile``)."""
        return self.devices.pem + self.root.pem


def _loaded(row: PkiAuthority) -> Authority:
    return Authority(
        row.name, x509.load_pem_x509_certificate(row.certificate_pem.encode()), row.key_name
    )


def existing(session: Session) -> Authorities | None:
    """The authorities when both exist, else None (nothing is made)."""
    root = session.get(PkiAuthority, ROOT)
    devices = session.get(PkiAuthority, DEVICES)
    if root is None or devices is None:
        return None
    return Authorities(_loaded(root), _loaded(devices))


def ensure(session: Session, settings: Settings) -> Authorities:
    """The authorities, made (with the first CRL) when missing."""
    found = existing(session)
    if found is not None:
        return found
    now = utcnow()
    root_key = keystore.signing_key(session, settings, ROOT_KEY)
    root = _ensure_row(
        session,
        ROOT,
        ROOT_KEY,
        lambda: issuance.root_certificate(root_key, settings.pki_ca_name, now),
    )
    devices_key = keystore.signing_key(session, settings, DEVICES_KEY)
    devices = _ensure_row(
        session,
        DEVICES,
        DEVICES_KEY,
        lambda: issuance.issuing_certificate(
            devices_key, settings.pki_ca_name, root.certificate, root_key, now
        ),
        first_crl=lambda authority: issuance.certificate_revocation_list(
            authority.certificate,
            devices_key,
            1,
            now,
            dt.timedelta(days=settings.pki_crl_days),
            (),
        ),
    )
    return Authorities(root, devices)


def _ensure_row(
    session: Session,
    name: str,
    key_name: str,
    build: Callable[[], x509.Certificate],
    first_crl: Callable[[Authority], x509.CertificateRevocationList] | None = None,
) -> Authority:
    stored = session.get(PkiAuthority, name)
    if stored is not None:
        return _loaded(stored)
    certificate = build()
    authority = Authority(name, certificate, key_name)
    row = PkiAuthority(
        name=name,
        key_name=key_name,
        certificate_pem=authority.pem,
        serial=issuance.serial_hex_of(certificate),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint=issuance.fingerprint(certificate),
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            if first_crl is not None:
                crl = first_crl(authority)
                session.add(
                    PkiCrl(
                        authority=name,
                        number=1,
                        this_update=crl.last_update_utc,
                        next_update=issuance.next_update_of(crl),
                        crl_der=crl.public_bytes(issuance.DER),
                    )
                )
    except IntegrityError:  # another process made it first: theirs is the authority
        winner = session.get(
            PkiAuthority, name, with_for_update={"read": True}, populate_existing=True
        )
        if winner is None:  # pragma: no cover - authorities are never deleted
            raise
        return _loaded(winner)
    record(
        session,
        None,
        "pki.authority_create",
        "pki_authority",
        name,
        None,
        {
            "subject": certificate.subject.rfc4514_string(),
            "serial": row.serial,
            "fingerprint": row.fingerprint,
            "not_after": row.not_after.isoformat(),
        },
    )
    return authority
