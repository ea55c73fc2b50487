"""Quarantine: a device that authenticated but is not (or no longer) trusted.

A quarantined device may connect and publish its own status, nothing else, and receives
nothing (broker.acl); it is listed for an admin's approval. Reasons: it is not on an approved
production whitelist, or the hardware IDs it reports differ from the enrolled set (a swapped
board). Putting a device in quarantine and releasing it are audited; the brokers learn of the
change as they learn of a credential change (the same re-check of connected sessions).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.principal import Principal

REASON_MAX = 200


def put(
    session: Session,
    device: Device,
    reason: str,
    actor: Principal | None = None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Quarantine ``device`` for ``reason``; False (and nothing written) when it already is."""
    if device.quarantine_reason is not None:
        return False
    device.quarantine_reason = reason[:REASON_MAX]
    device.quarantined_at = utcnow()
    record(
        session,
        actor,
        "device.quarantine",
        "device",
        device.id,
        device.organization_id,
        {"reason": device.quarantine_reason, **(details or {})},
    )
    return True


def release(session: Session, device: Device, actor: Principal | None) -> bool:
    """Approve a quarantined device; False (and nothing written) when it was not quarantined."""
    if device.quarantine_reason is None:
        return False
    reason = device.quarantine_reason
    device.quarantine_reason = None
    device.quarantined_at = None
    record(
        session,
        actor,
        "device.approve",
        "device",
        device.id,
        device.organization_id,
        {"was": reason},
    )
    return True
