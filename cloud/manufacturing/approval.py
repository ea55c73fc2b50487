"""Approving a device by hand: out of quarantine, or before it ever connects.

An admin (``manufacturing:approve``) approves a device that connected without being on an
approved production whitelist, or whose hardware IDs changed (a repair that swapped a board:
the approval adopts the IDs the device last announced as its enrolled set). Audited.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from cloud.audit.service import actor_recorder, record
from cloud.db import utcnow
from cloud.devices import quarantine
from cloud.devices.models import Device, DeviceStatus
from cloud.identity.principal import Principal
from cloud.manufacturing import StateError

HARDWARE_REASON = "hardware IDs changed"


def approve_device(session: Session, device: Device, actor: Principal) -> dict[str, Any]:
    """Approve ``device`` and release it from quarantine; what changed, as audited.
    StateError (reason ``already_approved``) when there is nothing to approve."""
    changed: dict[str, Any] = {}
    if device.approved_at is None:
        device.approved_at = utcnow()
        device.approved_by = actor.audit_id
        changed["approved_by"] = actor.audit_id
    reason = device.quarantine_reason or ""
    if reason.startswith(HARDWARE_REASON):
        status = session.get(DeviceStatus, device.id)
        reported = status.reported_hardware if status is not None else None
        if reported:
            before = {"chip": device.chip_id, "slaves": device.slave_ids}
            device.chip_id = reported.get("chip")
            device.slave_ids = sorted((reported.get("slaves") or {}).values())
            changed["hardware"] = [before, {"chip": device.chip_id, "slaves": device.slave_ids}]
    released = quarantine.release(session, device, actor_recorder(actor))
    if not changed and not released:
        raise StateError(
            f"device {device.id} is approved and not quarantined", "device", "already_approved"
        )
    if changed:
        record(
            session, actor, "device.whitelist", "device", device.id, device.organization_id, changed
        )
    return {"released": released, **changed}
