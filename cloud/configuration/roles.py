"""The role names a caller holds for one device: what the parameter schema's ``read`` and
``write`` lists name.

``Principal`` keeps permissions, not role names (routes check permissions), so the names are
read here from the caller's role assignments, with the same narrowing rules as the grants:
org-wide in the device's organization, or narrowed to its site or one of its groups; a
platform-admin assignment applies everywhere.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.devices.models import Device
from cloud.identity.models import RoleAssignment
from cloud.identity.permissions import PLATFORM_ADMIN
from cloud.identity.principal import Principal


def roles_for_device(session: Session, principal: Principal, device: Device) -> frozenset[str]:
    """Names of the system roles ``principal`` holds where ``device`` is.

    Only system roles count: the schema's lists name them (cloud/identity/permissions.py), and an
    organization's own role that happens to be called ``installer`` is not the installer role.
    """
    if principal.kind == "user":
        holder = RoleAssignment.user_id == principal.id
    elif principal.kind == "client":
        holder = RoleAssignment.client_id == principal.id
    else:
        return frozenset()
    group_ids = {group.id for group in device.groups}
    names: set[str] = set()
    for assignment in session.scalars(select(RoleAssignment).where(holder)):
        role = assignment.role
        if role.organization_id is not None:
            continue
        everywhere = PLATFORM_ADMIN in role.permission_names
        if not everywhere and assignment.organization_id != device.organization_id:
            continue
        if assignment.site_id is not None and assignment.site_id != device.site_id:
            continue
        if assignment.device_group_id is not None and assignment.device_group_id not in group_ids:
            continue
        names.add(role.name)
    # An owner or guest of this very charger (ChargerAccess) holds the system role of that name.
    level = principal.access_level(device.id)
    if level is not None:
        names.add(level.value)
    return frozenset(names)
