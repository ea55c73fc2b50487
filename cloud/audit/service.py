"""Writing the audit log, in the same transaction as the change it records."""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from cloud.audit.models import AuditEntry
from cloud.identity.principal import Principal


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Where the change came from: the client address and agent of an HTTP request."""

    source_ip: str | None
    user_agent: str | None


# Set by the HTTP layer for the length of a request (cloud.app), unset in workers and the CLI:
# the audit log records the origin without this domain knowing about Flask.
ORIGIN: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("audit_origin", default=None)


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
    origin = ORIGIN.get()
    if origin is not None:
        entry.source_ip = origin.source_ip
        entry.user_agent = origin.user_agent
    session.add(entry)
    return entry


def system_recorder(worker: str) -> Callable[[Session, str, Any, dict[str, Any]], None]:
    """An audit trail for a worker's own changes to a device (``cloud.devices.status_worker``
    ``AuditTrail``): actor ``system``, named after the worker; no origin (not a request)."""

    def recorder(session: Session, action: str, device: Any, details: dict[str, Any]) -> None:
        entry = record(session, None, action, "device", device.id, device.organization_id, details)
        entry.actor_id = f"system:{worker}"
        entry.actor_name = f"{worker} worker"

    return recorder


def actor_recorder(actor: Principal | None) -> Callable[[Session, str, Any, dict[str, Any]], None]:
    """The audit trail of a person's (or API client's) changes to a device, for the registry's
    functions that take one injected (``cloud.devices.quarantine``)."""

    def recorder(session: Session, action: str, device: Any, details: dict[str, Any]) -> None:
        record(session, actor, action, "device", device.id, device.organization_id, details)

    return recorder


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
