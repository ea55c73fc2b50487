"""Object-level scoping: which organization's records a caller may see or change.

Records out of the caller's scope answer 404, not 403: one organization must not learn what
another has (the API behaves as if the record did not exist).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute

from cloud.api.auth import current_principal
from cloud.api.errors import field_error, forbidden, not_found
from cloud.db import request_session
from cloud.devices.models import Device, device_group_members
from cloud.identity.principal import Scope
from cloud.organizations.models import Organization

T = TypeVar("T")


def org_clause(column: InstrumentedAttribute[Any], permission: str) -> ColumnElement[bool]:
    """SQL condition: the record's organization is one where ``permission`` holds org-wide."""
    orgs = current_principal().scope(permission).orgs
    if orgs is None:
        return true()
    return column.in_(orgs) if orgs else false()


def device_clause(permission: str) -> ColumnElement[bool]:
    """SQL condition: the device is in scope org-wide, through its site, through a group, or
    as one the caller owns or is a guest of (ChargerAccess)."""
    return scope_device_clause(current_principal().scope(permission))


def scope_device_clause(scope: Scope) -> ColumnElement[bool]:
    """``device_clause`` for any scope, not only the caller's (a card holder's, for one)."""
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


def get_scoped(
    model: type[T], ident: Any, permission: str, what: str, read: str | None = None
) -> T:
    """Load a record of an organization where ``permission`` holds.

    404 when the record does not exist or is out of the caller's ``read`` scope; 403 when the
    caller can see it but not do ``permission`` to it.
    """
    obj = request_session().get(model, ident)
    principal = current_principal()
    if obj is None:
        not_found(what)
    org_id = obj.organization_id  # type: ignore[attr-defined]
    if not principal.may_in(permission, org_id):
        if read is not None and principal.may_in(read, org_id):
            forbidden(permission)
        not_found(what)
    return obj


def require_in(permission: str, organization_id: int, read_permission: str) -> None:
    """403 if the caller cannot do ``permission`` in an organization it can see; 404 if unseen."""
    principal = current_principal()
    if not principal.may_in(permission, organization_id):
        if principal.may_in(read_permission, organization_id):
            forbidden(permission)
        not_found("organization")


def target_org(organization_id: int | None, permission: str, field: str = "organization_id") -> int:
    """The organization a new record goes to: the given one, else the caller's own.

    An organization the caller may not create in is reported on the field, as if unknown.
    """
    principal = current_principal()
    org_id = principal.organization_id if organization_id is None else organization_id
    if request_session().get(Organization, org_id) is None or not principal.may_in(
        permission, org_id
    ):
        field_error(field, f"unknown organization, or you may not {permission} there")
    return org_id
