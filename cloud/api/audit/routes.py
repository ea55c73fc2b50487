"""REST resources: /audit-log (read-only)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, select

from cloud.api.audit.schemas import AuditEntrySchema, AuditQuerySchema
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.errors import not_found
from cloud.api.scoping import org_clause
from cloud.audit.models import AuditEntry
from cloud.db import request_session

audit = Blueprint(
    "audit",
    __name__,
    url_prefix="/audit-log",
    description="Who did what to which object, when and from where.",
)


@audit.route("", endpoint="AuditLog")
class AuditLog(MethodView):
    @requires("audit:read")
    @audit.arguments(AuditQuerySchema, location="query")
    @audit.response(200, AuditEntrySchema(many=True))
    @audit.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """Search the audit log, newest first."""
        stmt = select(AuditEntry).where(org_clause(AuditEntry.organization_id, "audit:read"))
        for column in ("organization_id", "action", "object_type", "object_id", "actor_id"):
            if column in query:
                stmt = stmt.where(getattr(AuditEntry, column) == query[column])
        if "since" in query:
            stmt = stmt.where(AuditEntry.at >= query["since"])
        if "until" in query:
            stmt = stmt.where(AuditEntry.at < query["until"])
        return stmt.order_by(AuditEntry.id.desc())


@audit.route("/<id:entry_id>", endpoint="AuditEntry")
class AuditEntryItem(MethodView):
    @requires("audit:read")
    @audit.response(200, AuditEntrySchema)
    def get(self, entry_id: int) -> AuditEntry:
        """Read one audit entry."""
        entry = request_session().get(AuditEntry, entry_id)
        if entry is None or not (
            current_principal().is_platform_admin
            or (
                entry.organization_id is not None
                and current_principal().may_in("audit:read", entry.organization_id)
            )
        ):
            not_found("audit entry")
        return entry
