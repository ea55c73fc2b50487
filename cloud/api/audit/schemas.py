"""Audit log representations."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import fields

from cloud.api.fields import Links, QueryId, Text, UtcDateTime
from cloud.api.schemas import Schema


class AuditEntrySchema(Schema):
    """One audit entry."""

    id = fields.Integer()
    at = fields.DateTime()
    organization_id = fields.Integer(allow_none=True)
    actor_type = fields.String()
    actor_id = fields.String()
    actor_name = fields.String()
    action = fields.String()
    object_type = fields.String()
    object_id = fields.String()
    source_ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    details = fields.Dict()
    links_ = Links()

    def links(self, obj: Any) -> dict[str, str]:
        return {"self": url_for("audit.AuditEntry", entry_id=obj.id)}


class AuditQuerySchema(Schema):
    """Audit log filters."""

    organization_id = QueryId()
    action = Text(64)
    object_type = Text(32)
    object_id = Text(64)
    actor_id = Text(64)
    since = UtcDateTime(metadata={"description": "ISO 8601 with zone, inclusive."})
    until = UtcDateTime(metadata={"description": "ISO 8601 with zone, exclusive."})
