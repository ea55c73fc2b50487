"""Role assignment rules: what may be granted, to whom, and where.

A caller may only hand out what it holds itself in that organization (no privilege escalation
through roles), and only roles of that organization or system roles.
"""

from __future__ import annotations

from typing import Any

from cloud.api.auth import current_principal
from cloud.api.errors import field_error
from cloud.db import request_session
from cloud.devices.models import DeviceGroup
from cloud.identity.models import Role, RoleAssignment
from cloud.organizations.models import Organization, Site


def check_delegable(permissions: list[str], organization_id: int, field: str) -> None:
    """403 naming ``field`` when the caller does not itself hold all ``permissions`` there."""
    ceiling = current_principal().permissions_in(organization_id)
    beyond = sorted(set(permissions) - ceiling)
    if beyond:
        field_error(
            field, f"you cannot grant permissions you do not hold: {', '.join(beyond)}", status=403
        )


def build_assignment(spec: dict[str, Any], holder_org: int, prefix: str = "") -> RoleAssignment:
    """A validated, unsaved assignment from ``spec`` (role_id, organization_id, site/group).

    Errors name the field, under ``prefix`` when the spec is nested (``roles.0.role_id``).
    """

    def field(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    session = request_session()
    org_id = spec.get("organization_id") or holder_org
    if org_id != holder_org and not current_principal().is_platform_admin:
        # Cross-organization roles are a platform matter (e.g. a support desk for many tenants).
        field_error(field("organization_id"), "must be the holder's organization")
    if org_id != holder_org and session.get(Organization, org_id) is None:
        # Else the role check below blames role_id, or the insert fails on the foreign key.
        field_error(field("organization_id"), "unknown organization")
    role = session.get(Role, spec["role_id"])
    if role is None or role.organization_id not in (None, org_id):
        field_error(field("role_id"), "unknown role")
    site_id, group_id = spec.get("site_id"), spec.get("device_group_id")
    if site_id is not None:
        site = session.get(Site, site_id)
        if site is None or site.organization_id != org_id:
            field_error(field("site_id"), "unknown site")
    if group_id is not None:
        group = session.get(DeviceGroup, group_id)
        if group is None or group.organization_id != org_id:
            field_error(field("device_group_id"), "unknown device group")
    check_delegable(role.permission_names, org_id, field("role_id"))
    return RoleAssignment(
        role=role,
        role_id=role.id,
        organization_id=org_id,
        site_id=site_id,
        device_group_id=group_id,
    )


def describe(assignment: RoleAssignment) -> dict[str, Any]:
    """An assignment as audit details."""
    return {
        "role": assignment.role.name,
        "organization_id": assignment.organization_id,
        "site_id": assignment.site_id,
        "device_group_id": assignment.device_group_id,
    }
