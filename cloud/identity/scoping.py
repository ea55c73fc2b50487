"""Which records a scope covers, as SQL conditions: the domain half of object-level scoping.

A ``Scope`` (``cloud.identity.principal``) names the organizations, sites, device groups and
single devices where a permission holds; these turn it into WHERE clauses. The HTTP layer
(``cloud.api.scoping``) applies them to the caller of a request; workers apply them to anyone
(a card holder's scope, when a charger's authorization list is computed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute

from cloud.devices.models import Device, device_group_members
from cloud.identity.principal import Scope


def scope_org_clause(column: InstrumentedAttribute[Any], scope: Scope) -> ColumnElement[bool]:
    """SQL condition: the record's organization is one where the scope holds org-wide."""
    if scope.orgs is None:
        return true()
    return column.in_(scope.orgs) if scope.orgs else false()


def scope_device_clause(scope: Scope) -> ColumnElement[bool]:
    """SQL condition: the device is in scope org-wide, through its site, through a group, or
    as one the holder owns or is a guest of (a ``ChargerAccess`` grant)."""
    if scope.orgs is None:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if scope.orgs:
        conditions.append(Device.organization_id.in_(scope.orgs))
    if scope.sites:
        conditions.append(Device.site_id.in_(scope.sites))
    if scope.groups:
        members = select(device_group_members.c.device_id).where(
            device_group_members.c.group_id.in_(scope.groups)
        )
        conditions.append(Device.id.in_(members))
    if scope.devices:
        conditions.append(Device.id.in_(sorted(scope.devices)))
    return or_(*conditions) if conditions else false()
