"""Building the PKI's certificates and CRLs: I/O-free, keys and values in, objects out.

The device certificate profile (RFC 5280; what a TLS client certificate for a broker needs):
subject CN = the device id, BasicConstraints CA:false (critical), KeyUsage digitalSignature
(critical), ExtendedKeyUsage clientAuth, SubjectKeyIdentifier, AuthorityKeyIdentifier from the
issuer's SKI, a random serial (159 bits, 4.1.2.2), SHA-256, validity cut to the issuer's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from cloud.pki import PkiError, serial_hex

DER = serialization.Encoding.DER

# A device's clock may run a little behind the platform's: the certificate starts earlier.
BACKDATE = dt.timedelta(minutes=5)
ROOT_VALIDITY = dt.timedelta(days=20 * 365)
ISSUING_VALIDITY = dt.timedelta(days=10 * 365)

# RFC 5280 5.3.1 reasons accepted for a device certificate. certificateHold is left out (a
# revocation here is final), the CA and AA compromises concern authorities, and unspecified
# is written as no reason code (5.3.1: "SHOULD be absent instead").
REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag
    for flag in (
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    )
}


@dataclasses.dataclass(frozen=True)
class Revoked:
    """One entry of a CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: str | None


def serial_hex_of(certificate: x509.Certificate) -> str:
    """The certificate's serial as the platform writes it (``cloud.pki.serial_hex``)."""
    return serial_hex(certificate.serial_number)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def public_key_der(key: CertificatePublicKeyTypes) -> bytes:
    """A public key as SubjectPublicKeyInfo DER."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_sha256(key: CertificatePublicKeyTypes) -> str:
    """SHA-256 of a public key's SubjectPublicKeyInfo, hex."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def pem(certificate: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def root_certificate(
    key: ec.EllipticCurvePrivateKey, name: str, now: dt.datetime
) -> x509.Certificate:
    """The self-signed root CA: it signs only the issuing CA (path length 1)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def issuing_certificate(
    key: ec.EllipticCurvePrivateKey,
    name: str,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    """The device CA, signed by the root; it signs end-entity certificates only (path 0)."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Device CA"),
        ]
    )
    not_before, not_after = clamp(now - BACKDATE, now + ISSUING_VALIDITY, root)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(root), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def clamp(
    not_before: dt.datetime, not_after: dt.datetime, issuer: x509.Certificate
) -> tuple[dt.datetime, dt.datetime]:
    """``not_before``/``not_after`` cut to inside the issuer's validity; PkiError when nothing
    is left (the issuer has expired)."""
    start = max(not_before, issuer.not_valid_before_utc)
    end = min(not_after, issuer.not_valid_after_utc)
    if end <= start or end <= not_before + BACKDATE:
        raise PkiError(
            f"the issuing CA {issuer.subject.rfc4514_string()} expires at "
            f"{issuer.not_valid_after_utc.isoformat()}: it can issue nothing more"
        )
    return start, end


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def device_certificate(
    public_key: CertificatePublicKeyTypes,
    device_id: str,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    """A device's TLS client certificate for ``public_key`` (the profile above)."""
    not_before, not_after = clamp(now - BACKDATE, now + validity, issuer)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def certificate_revocation_list(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    number: int,
    now: dt.datetime,
    validity: dt.timedelta,
    revoked: Iterable[Revoked],
) -> x509.CertificateRevocationList:
    """The issuer's CRL number ``number`` (RFC 5280 5.2.3), valid from ``now`` for
    ``validity``, listing ``revoked``."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + validity)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_id(issuer), critical=False)
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        flag = REVOCATION_REASONS.get(entry.reason or "")
        if flag is not None and flag is not x509.ReasonFlags.unspecified:
            item = item.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(issuer_key, hashes.SHA256())


def next_update_of(crl: x509.CertificateRevocationList) -> dt.datetime:
    """A CRL's nextUpdate (ours always carry one)."""
    if crl.next_update_utc is None:  # pragma: no cover - certificate_revocation_list sets it
        raise PkiError("a CRL without nextUpdate")
    return crl.next_update_utc
