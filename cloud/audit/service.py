"""Writing the audit log, in the same transaction as the change it records."""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from sqlalchemy.orm import Session

from cloud.audit.models import AuditEntry
from cloud.identity.principal import Principal


def record(
    session: Session,
    actor: Principal | None,
    action: str,
    object_type: str,
    object_id: object,
    organization_id: int | None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry; it commits or rolls back with the change itself."""
    entry = AuditEntry(
        organization_id=organization_id,
        actor_type=actor.kind if actor else "system",
        actor_id=actor.audit_id if actor else "system",
        actor_name=actor.name if actor else "ampfleet",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=details or {},
    )
    if has_request_context():
        entry.source_ip = request.remote_addr
        entry.user_agent = (request.user_agent.string or "")[:256] or None
    session.add(entry)
    return entry


def changes(obj: object, updates: dict[str, Any]) -> dict[str, Any]:
    """Apply ``updates`` to ``obj``; return {field: [old, new]} for what really changed."""
    changed: dict[str, Any] = {}
    for field, new in updates.items():
        old = getattr(obj, field)
        if old != new:
            setattr(obj, field, new)
            changed[field] = [_plain(old), _plain(new)]
    return changed


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
