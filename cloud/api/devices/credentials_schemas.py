"""Representations of device credentials: the state (any time) and the secret (once)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import fields

from cloud.api.fields import Links
from cloud.api.schemas import Schema


class CredentialSchema(Schema):
    """A device's MQTT credential, without its secret."""

    links_ = Links()
    device_id = fields.String(dump_only=True)
    state = fields.String(
        dump_only=True,
        metadata={"enum": ["active", "revoked"], "description": "revoked: refused by the broker."},
    )
    username = fields.String(dump_only=True, metadata={"description": "MQTT username."})
    client_id = fields.String(dump_only=True, metadata={"description": "MQTT client id."})
    broker_url = fields.String(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    rotated_at = fields.DateTime(dump_only=True, allow_none=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)

    def links(self, obj: Any) -> dict[str, str]:
        """Relations of a credential: itself, rotation, its device and the device's audit."""
        device_id = obj["device_id"]
        return {
            "self": url_for("device_credentials.Credentials", device_id=device_id),
            "rotate": url_for("device_credentials.Rotation", device_id=device_id),
            "device": url_for("devices.Device", device_id=device_id),
            "audit": url_for("audit.AuditLog", object_type="device", object_id=device_id),
        }


class IssuedCredentialSchema(CredentialSchema):
    """A credential with its password: in the answer to an issue or a rotation, and never
    again (only an argon2id hash is stored)."""

    password = fields.String(
        dump_only=True,
        metadata={"description": "MQTT password. Shown once: store it on the device now."},
    )
    broker_synced = fields.Boolean(
        dump_only=True,
        metadata={
            "description": "False when the broker could not be updated at once (it was "
            "unreachable). With Mosquitto, rotate again once it is back: only a hash is "
            "stored, so a later resync cannot hand it this password."
        },
    )
