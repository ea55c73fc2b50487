"""Quarantine: a device that authenticated but is not (or no longer) trusted.

A quarantined device may connect and publish its own status, nothing else, and receives
nothing (broker.acl); it is listed for an admin's approval. Reasons: it is not on an approved
production whitelist, or the hardware IDs it reports differ from the enrolled set (a swapped
board). Putting a device in quarantine and releasing it are audited; the brokers learn of the
change as they learn of a credential change (the same re-check of connected sessions).

The audit trail is injected (``cloud.audit.service.system_recorder`` for a worker,
``actor_recorder`` for a person), as for the status worker: the audit domain sits above the
registry, which does not import who audits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.devices.models import Device

if TYPE_CHECKING:
    from cloud.devices.status_worker import AuditTrail

REASON_MAX = 200


def put(
    session: Session,
    device: Device,
    reason: str,
    audit: AuditTrail | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Quarantine ``device`` for ``reason``; False (and nothing written) when it already is."""
    if device.quarantine_reason is not None:
        return False
    device.quarantine_reason = reason[:REASON_MAX]
    device.quarantined_at = utcnow()
    if audit is not None:
        audit(session, "device.quarantine", device, {"reason": reason, **(details or {})})
    return True


def release(session: Session, device: Device, audit: AuditTrail | None = None) -> bool:
    """Approve a quarantined device; False (and nothing written) when it was not quarantined."""
    if device.quarantine_reason is None:
        return False
    reason = device.quarantine_reason
    device.quarantine_reason = None
    device.quarantined_at = None
    if audit is not None:
        audit(session, "device.approve", device, {"was": reason})
    return True
