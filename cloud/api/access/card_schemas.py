"""Representations of RFID cards."""

from __future__ import annotations

import re
from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields

from cloud.api.fields import Id, QueryId, Text
from cloud.api.schemas import ResourceSchema, Schema

# An OCPP idToken as a charger sends it: printable ASCII without spaces (OCPP 1.6 CiString,
# 2.0.1 IdTokenType), 1 to 64 characters (contract 4.9 token ids). The first character is a
# letter or digit, so that no uid reads as a formula when a billing export is opened in a
# spreadsheet (=, +, -, @).
_UID = re.compile(r"^[A-Za-z0-9][\x21-\x7e]{0,63}$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


def normalise_uid(raw: str) -> str:
    """The uid as stored: upper-case when it is hex (an ISO 14443 UID, as readers print it in
    either case), as given otherwise (other idTokens are case-sensitive); ValueError if bad."""
    if not _UID.match(raw):
        raise ValueError(raw)
    return raw.upper() if _HEX.match(raw) else raw


class CardUid(Text):
    """A card uid, stored normalised."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(64, min_length=1, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        raw = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalise_uid(raw)
        except ValueError as exc:
            raise ValidationError(
                "Use 1 to 64 printable ASCII characters without spaces, starting with a "
                "letter or digit (hex UIDs are stored upper-case)."
            ) from exc


class CardSchema(ResourceSchema):
    """An RFID card (an OCPP idToken) registered to a user of the organization."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(
        load_default=None,
        metadata={"description": "The card's organization; the caller's own when omitted."},
    )
    uid = CardUid(required=True, metadata={"description": "Unique in the organization."})
    user_id = Id(required=True, metadata={"description": "A user of the card's organization."})
    label = Text(200, load_default="")
    enabled = fields.Boolean(load_default=True)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("cards.Card", card_id=obj.id),
            "user": url_for("users.User", user_id=obj.user_id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
            "sessions": url_for("session_history.Sessions", card_id=obj.id),
            "audit": url_for("audit.AuditLog", object_type="card", object_id=obj.id),
        }


class CardUpdateSchema(Schema):
    """What can change on a card: its label, whether it is enabled, its holder. The uid names
    the physical card: register another card instead."""

    label = Text(200)
    enabled = fields.Boolean()
    user_id = Id()


class CardQuerySchema(Schema):
    """Card search."""

    organization_id = QueryId()
    user_id = QueryId()
    enabled = fields.Boolean()
    uid = CardUid(metadata={"description": "Exact uid (hex is matched in any case)."})
