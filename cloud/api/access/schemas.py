"""Representations of a charger's owners and guests, and of invitations."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate, validates_schema

from cloud.access.invitations import InvitationState, state
from cloud.api.fields import Email, Text, UtcDateTime
from cloud.api.schemas import ResourceSchema, Schema
from cloud.db import request_session
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import User
from cloud.identity.principal import in_window

LEVELS = [level.value for level in AccessLevel]
MAX_INVITATION_LIFETIME = dt.timedelta(days=90)  # an invitation is not a standing credential


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _user(row: ChargerAccess) -> User | None:
    # The session's identity map makes this one query per user per request.
    return request_session().get(User, row.user_id)


class AccessSchema(ResourceSchema):
    """A user's access to one charger."""

    device_id = fields.String(dump_only=True)
    user_id = fields.Integer(dump_only=True)
    email = fields.Function(lambda row: (u := _user(row)) and u.email, dump_only=True)
    name = fields.Function(lambda row: (u := _user(row)) and u.name, dump_only=True)
    level = fields.Function(
        lambda row: row.level.value,
        dump_only=True,
        metadata={"description": "owner or guest."},
    )
    valid_from = fields.DateTime(dump_only=True, allow_none=True)
    valid_until = fields.DateTime(dump_only=True, allow_none=True)
    active = fields.Function(
        lambda row: in_window(row, _now()),
        dump_only=True,
        metadata={"description": "Whether the access holds now (a guest inside the window)."},
    )
    granted_by = fields.Integer(dump_only=True, allow_none=True)

    class Meta(ResourceSchema.Meta):
        exclude = ("updated_at",)  # rows are granted, re-granted and removed

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("charger_access.Access", device_id=obj.device_id, user_id=obj.user_id),
            "device": url_for("devices.Device", device_id=obj.device_id),
        }


class AccessQuerySchema(Schema):
    """Filters of a charger's access list."""

    level = fields.String(validate=validate.OneOf(LEVELS))


class InvitationRequestSchema(Schema):
    """``POST /devices/{id}/invitations``."""

    email = Email(required=True, validate=validate.Length(max=254))
    level = fields.String(
        required=True,
        validate=validate.OneOf(LEVELS),
        metadata={"description": "owner (co-owner) or guest."},
    )
    valid_from = UtcDateTime(
        load_default=None,
        allow_none=True,
        metadata={"description": "Guests only: start of the window they may charge in."},
    )
    valid_until = UtcDateTime(
        load_default=None,
        allow_none=True,
        metadata={"description": "Guests only: end of that window (after `valid_from`)."},
    )
    expires_at = UtcDateTime(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Until when the invitation can be accepted (at most 90 days ahead). "
            "Default: now plus the `invitation_ttl` setting."
        },
    )

    @validates_schema
    def _window(self, data: dict[str, Any], **_: Any) -> None:
        now = _now()
        if data.get("level") == AccessLevel.OWNER:
            for field in ("valid_from", "valid_until"):
                if data.get(field) is not None:
                    raise ValidationError(
                        "Only guests have a validity window; owners have none.", field
                    )
        start, end = data.get("valid_from"), data.get("valid_until")
        if end is not None and end <= now:
            raise ValidationError("Is in the past: the guest could never charge.", "valid_until")
        if start is not None and end is not None and end <= start:
            raise ValidationError("Must be after valid_from.", "valid_until")
        expires = data.get("expires_at")
        if expires is not None and expires <= now:
            raise ValidationError("Is in the past.", "expires_at")
        if expires is not None and expires > now + MAX_INVITATION_LIFETIME:
            raise ValidationError("At most 90 days ahead.", "expires_at")


class InvitationSchema(ResourceSchema):
    """An invitation as its sender and the charger's managers see it (never its secret)."""

    id = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True)
    email = fields.String(dump_only=True)
    level = fields.Function(lambda inv: inv.level.value, dump_only=True)
    valid_from = fields.DateTime(dump_only=True, allow_none=True)
    valid_until = fields.DateTime(dump_only=True, allow_none=True)
    expires_at = fields.DateTime(dump_only=True)
    state = fields.Function(
        lambda inv: state(inv, _now()).value,
        dump_only=True,
        metadata={"description": "pending, accepted, revoked or expired."},
    )
    invited_by = fields.Integer(dump_only=True, allow_none=True)
    accepted_at = fields.DateTime(dump_only=True, allow_none=True)
    accepted_by = fields.Integer(dump_only=True, allow_none=True)
    revoked_at = fields.DateTime(dump_only=True, allow_none=True)

    class Meta(ResourceSchema.Meta):
        exclude = ("updated_at",)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("invitations.Invitation", invitation_id=obj.id),
            "device": url_for("devices.Device", device_id=obj.device_id),
            "accept": url_for("invitations.Accept", invitation_id=obj.id),
        }


class InvitationQuerySchema(Schema):
    """Filters of a charger's invitations."""

    state = fields.String(validate=validate.OneOf([s.value for s in InvitationState]))


class SecretQuerySchema(Schema):
    """The secret of the e-mailed link."""

    secret = Text(256, min_length=1, required=True)


class AcceptSchema(Schema):
    """``POST /invitations/{id}/accept``: the secret, and for a new account a name and password."""

    secret = Text(
        256,
        min_length=1,
        required=True,
        metadata={"description": "The `secret` of the e-mailed link."},
    )
    name = Text(200, load_default=None, metadata={"description": "New accounts: your name."})
    # As UserSchema: NIST SP 800-63B asks at least 8; we ask 12.
    password = Text(
        256,
        min_length=12,
        load_only=True,
        load_default=None,
        metadata={
            "description": "New accounts only (at least 12 characters); an existing account "
            "keeps its password."
        },
    )


class InvitationPreviewSchema(Schema):
    """What an invitation offers, shown to the holder of its secret before accepting."""

    id = fields.String()
    device_id = fields.String()
    device_name = fields.String()
    email = fields.String()
    level = fields.String()
    valid_from = fields.DateTime(allow_none=True)
    valid_until = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime()
    account_exists = fields.Boolean(
        metadata={"description": "False: accepting needs a `password` (and a `name`)."}
    )
