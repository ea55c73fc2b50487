"""The platform's PKI: a root CA and an issuing CA for devices (ECDSA P-256), their keys sealed
at rest with a key-encryption key, every certificate issued to a device recorded, and a CRL
kept current (docs/pki.md).

Modules: ``csr`` and ``issuance`` are I/O-free cores (a CSR in, a verdict out; keys and values
in, certificates and CRLs out); ``kek`` seals and opens private keys; ``keystore`` keeps sealed
keys in the records; ``authorities`` makes the CAs on first use; ``crl`` keeps the revocation
list and its files; ``service`` is what the rest of the platform calls.

Exceptions::

    PkiError                          base of this package
    +-- CsrRejectedError              a CSR refused; ``reason`` says what is wrong with it
    +-- CertificateRefusedError       a presented certificate is not one of ours, or is
    |                                 expired, revoked or names another device (``reason``)
    +-- CertificateNotFoundError      no certificate with that serial
    +-- NoCurrentCertificateError     re-certification of a device that holds no certificate
    +-- AlreadyRevokedError           revoking a certificate revoked already
    +-- RevocationReasonError         a revocation reason that is not accepted
    +-- DeviceNotEligibleError        the device is unknown or decommissioned: no certificate
    +-- KeyEncryptionError            the key-encryption key is missing, malformed, kept in the
                                      data directory, or not the one the keys were sealed with
"""

from __future__ import annotations


class PkiError(Exception):
    """Base of the PKI's errors."""


class CsrRejectedError(PkiError):
    """A certificate signing request refused; ``reason`` names what is wrong with it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateRefusedError(PkiError):
    """A presented certificate that the platform does not accept; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateNotFoundError(PkiError):
    """No certificate recorded under that serial."""

    def __init__(self, serial: str) -> None:
        super().__init__(f"no certificate with serial {serial}")
        self.serial = serial


class NoCurrentCertificateError(PkiError):
    """The device holds no certificate in force (re-certification needs one)."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} holds no certificate that is not revoked")
        self.device_id = device_id


class AlreadyRevokedError(PkiError):
    """The certificate is revoked already."""

    def __init__(self, serial: str) -> None:
        super().__init__(f"certificate {serial} is revoked already")
        self.serial = serial


class RevocationReasonError(PkiError):
    """A revocation reason that is not one of ``REVOCATION_REASONS``."""

    def __init__(self, reason: str, accepted: tuple[str, ...]) -> None:
        super().__init__(f"unknown revocation reason {reason!r}: one of {', '.join(accepted)}")
        self.reason = reason


class DeviceNotEligibleError(PkiError):
    """The device does not exist or may not hold a certificate (decommissioned)."""

    def __init__(self, device_id: str, why: str) -> None:
        super().__init__(f"device {device_id}: {why}")
        self.device_id = device_id
        self.why = why


class KeyEncryptionError(PkiError):
    """The key-encryption key is unusable, or the stored keys were sealed with another one."""


def serial_hex(serial: int) -> str:
    """How the platform writes a certificate serial: lower-case hex, no leading zeros."""
    return format(serial, "x")


def normalize_serial(text: str) -> str | None:
    """A serial as given by a person or OpenSSL (``0A:1B``, ``0x0a1b``, ``0A1B``) in the
    platform's form, or None when it is not hexadecimal (or longer than 20 bytes, RFC 5280
    4.1.2.2)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 40 or any(c not in "0123456789abcdef" for c in cleaned):
        return None
    return serial_hex(int(cleaned, 16))
