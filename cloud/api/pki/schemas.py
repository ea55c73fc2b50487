"""Representations of device certificates and of what signs and revokes them."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import fields, validate

from cloud.api.fields import Links, Text, UtcDateTime
from cloud.api.schemas import Schema
from cloud.pki.csr import MAX_CSR_BYTES
from cloud.pki.issuance import REVOCATION_REASONS
from cloud.pki.models import CertificateState


class CertificateSchema(Schema):
    """A certificate issued to a device, as the records keep it."""

    links_ = Links()
    serial = fields.String(
        dump_only=True, metadata={"description": "Lower-case hex, no leading zeros."}
    )
    device_id = fields.String(dump_only=True)
    authority = fields.String(dump_only=True, metadata={"description": "The issuing CA."})
    state = fields.Enum(CertificateState, by_value=True, dump_only=True)
    not_before = fields.DateTime(dump_only=True)
    not_after = fields.DateTime(dump_only=True)
    fingerprint = fields.String(
        dump_only=True, metadata={"description": "SHA-256 of the certificate's DER, hex."}
    )
    public_key_sha256 = fields.String(
        dump_only=True,
        metadata={
            "description": "SHA-256 of the SubjectPublicKeyInfo: equal across renewals "
            "of the same key."
        },
    )
    issued_at = fields.DateTime(dump_only=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)
    revocation_reason = fields.String(dump_only=True, allow_none=True)
    certificate_pem = fields.String(dump_only=True)

    def links(self, obj: Any) -> dict[str, str]:
        """Relations of a certificate: itself, its revocation, its device."""
        return {
            "self": url_for("certificates.Certificate", serial=obj.serial),
            "revoke": url_for("certificates.Revocation", serial=obj.serial),
            "device": url_for("devices.Device", device_id=obj.device_id),
        }


class CertificateQuerySchema(Schema):
    """Filters of the certificate list."""

    device_id = Text(64)
    state = fields.Enum(CertificateState, by_value=True)
    expiring_before = UtcDateTime(
        metadata={
            "description": "Only certificates whose not_after is before this moment "
            "(ISO 8601 with zone): those to renew."
        }
    )


class RevocationSchema(Schema):
    """Why a certificate is revoked (RFC 5280 5.3.1 reason codes)."""

    reason = fields.String(
        required=True,
        validate=validate.OneOf(tuple(REVOCATION_REASONS)),
        metadata={
            "description": "keyCompromise disconnects a stolen board; superseded after a "
            "renewal; cessationOfOperation for a scrapped one."
        },
    )


class CsrSchema(Schema):
    """A certificate signing request to sign for a device."""

    csr = Text(
        MAX_CSR_BYTES,
        min_length=1,
        required=True,
        metadata={
            "description": "PEM PKCS#10 request: EC P-256 or RSA >= 2048 bits, subject CN = "
            "the device id, no CA extensions, signature valid. A refusal is a 422 naming why."
        },
    )


class IssuedSchema(Schema):
    """A certificate just issued, with its chain: what the device installs."""

    links_ = Links()
    device_id = fields.String(dump_only=True)
    serial = fields.String(dump_only=True)
    certificate_pem = fields.String(dump_only=True)
    chain_pem = fields.String(
        dump_only=True,
        metadata={"description": "The certificate, the device CA, the root CA (PEM)."},
    )
    not_before = fields.DateTime(dump_only=True)
    not_after = fields.DateTime(dump_only=True)
    fingerprint = fields.String(dump_only=True)

    def links(self, obj: Any) -> dict[str, str]:
        """Relations of an issued certificate: its record and its device."""
        return {
            "certificate": url_for("certificates.Certificate", serial=obj["serial"]),
            "device": url_for("devices.Device", device_id=obj["device_id"]),
        }
