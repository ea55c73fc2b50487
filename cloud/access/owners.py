"""Who may use one charger besides the organization's roles: its owners and guests.

A ``ChargerAccess`` row makes a user an owner of a charger (uses it, sees its sessions, invites
co-owners and guests) or a guest (starts and stops sessions on it inside a validity window).
The API scoping reads these rows through the principal (``cloud/identity/principal.py``), so an
owner or a guest sees and acts on exactly their chargers through the ordinary device routes.
Every change here requests a recomputation of the user's chargers' local authorization lists
(contract 4.9, ``cloud.access.outbox``), so that the chargers follow.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.principal import Principal

log = logging.getLogger(__name__)


def role_covers(principal: Principal, permission: str, device: Device) -> bool:
    """True when ``permission`` holds on ``device`` through a role (not through ChargerAccess)."""
    scope = principal.scope(permission)
    if scope.orgs is None or device.organization_id in scope.orgs:
        return True
    if device.site_id is not None and device.site_id in scope.sites:
        return True
    return any(group.id in scope.groups for group in device.groups)


def is_owner(principal: Principal, device: Device) -> bool:
    """True when the caller owns ``device`` (a ChargerAccess owner row)."""
    return principal.access_level(device.id) is AccessLevel.OWNER


def may_manage(principal: Principal, device: Device) -> bool:
    """Invite to, and remove people from, ``device``: its owners, and holders of ``users:write``
    in its organization."""
    return is_owner(principal, device) or principal.may_in("users:write", device.organization_id)


def may_see(principal: Principal, device: Device) -> bool:
    """See who may use ``device``: its owners, and whoever reads it through a role (a guest
    alone does not learn who else uses the charger)."""
    return is_owner(principal, device) or role_covers(principal, "devices:read", device)


def find(session: Session, device_id: str, user_id: int) -> ChargerAccess | None:
    """The access row of (device, user), if any."""
    return session.scalar(
        select(ChargerAccess).where(
            ChargerAccess.device_id == device_id, ChargerAccess.user_id == user_id
        )
    )


def grant(
    session: Session,
    device_id: str,
    user_id: int,
    level: AccessLevel,
    valid_from: dt.datetime | None,
    valid_until: dt.datetime | None,
    granted_by: int | None,
) -> tuple[ChargerAccess, dict[str, Any]]:
    """Create or update the access of (device, user); returns it and what changed.

    An owner invited again as a guest stays an owner: an invitation never takes rights away.
    Owners have no window.
    """
    if level is AccessLevel.OWNER:
        valid_from = valid_until = None
    row = find(session, device_id, user_id)
    if row is None:
        row = ChargerAccess(
            device_id=device_id,
            user_id=user_id,
            level=level,
            valid_from=valid_from,
            valid_until=valid_until,
            granted_by=granted_by,
        )
        session.add(row)
        session.flush()
        return row, {"level": [None, level.value], "window": [None, _window(row)]}
    if row.level is AccessLevel.OWNER and level is AccessLevel.GUEST:
        return row, {}
    before = (row.level.value, _window(row))
    row.level, row.valid_from, row.valid_until = level, valid_from, valid_until
    row.granted_by = granted_by
    session.flush()
    after = (row.level.value, _window(row))
    changed: dict[str, Any] = {}
    if before[0] != after[0]:
        changed["level"] = [before[0], after[0]]
    if before[1] != after[1]:
        changed["window"] = [before[1], after[1]]
    return row, changed


def _window(row: ChargerAccess) -> list[str | None]:
    return [
        row.valid_from.isoformat() if row.valid_from else None,
        row.valid_until.isoformat() if row.valid_until else None,
    ]


def describe(row: ChargerAccess) -> dict[str, Any]:
    """The access as the audit log records it."""
    return {
        "device_id": row.device_id,
        "user_id": row.user_id,
        "level": row.level.value,
        "window": _window(row),
    }
