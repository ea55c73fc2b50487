"""The PKI's records: sealed keys, the authorities, the certificates issued to devices, and
the current CRL of each issuing authority."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, enum_column, utcnow

# A CRL grows by some 40 bytes per revoked certificate: MySQL's BLOB (64 KiB) would stop near
# 1,600 of them; MEDIUMBLOB holds 16 MiB.
LongBlob = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")


class PkiKey(Base):
    """A private key sealed with the key-encryption key (``cloud.pki.kek``): the records never
    hold it in the clear. The public half is kept in the clear for whoever verifies."""

    __tablename__ = "pki_keys"

    # Unique by being the key: two processes creating the same key at once, one wins.
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))  # ec-p256
    # SubjectPublicKeyInfo, DER.
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    # AES-256-GCM: 12-byte nonce + PKCS#8 DER ciphertext + tag; the key's name is the
    # associated data, so a sealed key copied under another name does not open.
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # Which KEK sealed it (a non-secret digest of it): "wrong KEK" is told apart from damage.
    kek_id: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PkiAuthority(Base):
    """A certificate authority of the platform: ``root`` (self-signed) or ``devices`` (the
    issuing CA of device certificates, signed by the root)."""

    __tablename__ = "pki_authorities"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_name: Mapped[str] = mapped_column(ForeignKey("pki_keys.name"))
    certificate_pem: Mapped[str] = mapped_column(Text)
    serial: Mapped[str] = mapped_column(String(40))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the DER, hex
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CertificateState(enum.StrEnum):
    """Where an issued certificate stands (expiry is read from ``not_after``)."""

    ISSUED = "issued"
    REVOKED = "revoked"


class DeviceCertificate(Base):
    """A certificate issued to a device. Kept after the device is deleted (no foreign key):
    a revoked certificate must stay on the CRL until it expires, whatever the registry says."""

    __tablename__ = "device_certificates"
    __table_args__ = (
        Index("ix_device_certificates_device_id_not_after", "device_id", "not_after"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(40), unique=True)
    device_id: Mapped[str] = mapped_column(String(64))
    authority: Mapped[str] = mapped_column(String(32))
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime] = mapped_column(index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the DER, hex
    # SHA-256 of the SubjectPublicKeyInfo: re-certification and key reuse are visible.
    public_key_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[CertificateState] = mapped_column(
        enum_column(CertificateState), default=CertificateState.ISSUED, index=True
    )
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    certificate_pem: Mapped[str] = mapped_column(Text)


class PkiCrl(Base):
    """The current CRL of an issuing authority, replaced under a row lock so that CRL numbers
    only grow (RFC 5280 5.2.3)."""

    __tablename__ = "pki_crls"

    authority: Mapped[str] = mapped_column(ForeignKey("pki_authorities.name"), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime]
    crl_der: Mapped[bytes] = mapped_column(LongBlob)
