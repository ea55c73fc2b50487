"""REST resources: guest credentials (docs/guest-credentials.md).

* ``POST /devices/{id}/guest-credential``: a guest of the charger gets a credential signed by
  the platform, for that charger and the guest's window (capped at
  ``guest_credential_max_days``), to show the charger when it has no cloud link. Only a guest
  gets one (403 naming ``guest`` otherwise: owners and role holders start sessions from the
  app, and a card works offline for them); audited (``guest_credential.issue``).
* ``GET /guest-credentials/keys``: the platform's public keys, as a charger holds them (its NVS
  record ``guest_keys``) and as SubjectPublicKeyInfo, for the factory and for anyone checking
  a credential.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography.hazmat.primitives import serialization
from flask import current_app
from flask.views import MethodView
from marshmallow import fields

from cloud.access import guestpass
from cloud.api.auth import current_principal, requires, requires_any
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.records import commit
from cloud.api.schemas import Schema
from cloud.audit.service import record
from cloud.db import request_session
from cloud.settings import Settings
from firmware.core import guestpass as core

guest_credentials = Blueprint(
    "guest_credentials",
    __name__,
    url_prefix="/devices",
    description="Guest credentials: a pass signed by the platform that a charger checks "
    "offline, so that a guest charges while the charger has no cloud link.",
)
platform_keys = Blueprint(
    "guest_credential_keys",
    __name__,
    url_prefix="/guest-credentials",
    description="The platform's public keys for guest credentials (what a charger's NVS holds).",
)


class GuestCredentialSchema(Schema):
    """A credential issued to the caller."""

    credential = fields.String(
        dump_only=True,
        metadata={
            "description": "The text to hand to the charger (base64url payload '.' "
            "base64url ECDSA P-256 signature)."
        },
    )
    guest_id = fields.String(
        dump_only=True,
        metadata={"description": "The id tag the charger reports the session under."},
    )
    device_id = fields.String(dump_only=True)
    key_id = fields.String(dump_only=True)
    not_before = fields.DateTime(dump_only=True)
    not_after = fields.DateTime(dump_only=True)


class PlatformKeySchema(Schema):
    """One public key."""

    key_id = fields.String(dump_only=True)
    point = fields.String(
        dump_only=True, metadata={"description": "base64url of the 65-byte point 04||X||Y."}
    )
    public_key_der = fields.String(
        dump_only=True, metadata={"description": "base64 of the SubjectPublicKeyInfo (DER)."}
    )


class PlatformKeysSchema(Schema):
    """The platform's guest-credential keys."""

    keys = fields.List(fields.Nested(PlatformKeySchema), dump_only=True)
    nvs_record = fields.String(
        dump_only=True,
        metadata={"description": "The NVS blob `guest_keys` a charger holds (JSON text)."},
    )


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


@guest_credentials.route(
    "/<string(maxlength=64):device_id>/guest-credential", endpoint="GuestCredential"
)
class GuestCredential(MethodView):
    @requires("charging:start")
    @guest_credentials.response(201, GuestCredentialSchema)
    def post(self, device_id: str) -> dict[str, Any]:
        """Get a guest credential for this charger: signed by the platform, valid for the
        guest's window (at most `guest_credential_max_days` from now), checked by the charger
        offline. Only a guest of the charger gets one (403 otherwise); 409 when the guest's
        window has closed."""
        device = get_device(device_id, "charging:start")
        principal = current_principal()
        session = request_session()
        settings = _settings()
        if principal.kind != "user":
            raise guestpass.NotAGuestError("not_a_guest", "only a guest (a user) gets one")
        now = dt.datetime.now(dt.UTC)
        issued = guestpass.issue(
            session,
            device,
            principal.id,
            guestpass.platform_key(session, settings),
            now,
            settings.guest_credential_max_days,
        )
        row = issued.record
        record(
            session,
            principal,
            "guest_credential.issue",
            "guest_credential",
            row.id,
            device.organization_id,
            {
                "device_id": device.id,
                "user_id": row.user_id,
                "key_id": row.key_id,
                "not_before": row.not_before.isoformat(),
                "not_after": row.not_after.isoformat(),
            },
        )
        commit()
        return {
            "credential": issued.credential,
            "guest_id": row.id,
            "device_id": device.id,
            "key_id": row.key_id,
            "not_before": row.not_before,
            "not_after": row.not_after,
        }


@platform_keys.route("/keys", endpoint="Keys")
class Keys(MethodView):
    @requires_any("devices:read", "manufacturing:enroll")
    @platform_keys.response(200, PlatformKeysSchema)
    def get(self) -> dict[str, Any]:
        """The public keys chargers check guest credentials with, and the NVS record that
        holds them (the factory writes it to every charger)."""
        session = request_session()
        keys = guestpass.public_keys(session, _settings())
        commit()  # the key is made on first use
        out = []
        for key in keys:
            point = guestpass.point_of(key)
            der = key.public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            out.append(
                {
                    "key_id": core.key_id(point),
                    "point": core.b64url_encode(point),
                    "public_key_der": base64.b64encode(der).decode(),
                }
            )
        return {"keys": out, "nvs_record": guestpass.nvs_record_of(keys).decode()}
