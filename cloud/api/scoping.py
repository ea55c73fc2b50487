"""Object-level scoping of the current request's caller (the SQL lives in
``cloud.identity.scoping``): which organization's records it may see or change.

Records out of the caller's scope answer 404, not 403: one organization must not learn what
another has (the API behaves as if the record did not exist).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from cloud.api.auth import current_principal
from cloud.api.errors import field_error, forbidden, not_found
from cloud.db import request_session
from cloud.identity.scoping import scope_device_clause, scope_org_clause
from cloud.organizations.models import Organization

T = TypeVar("T")


def org_clause(column: InstrumentedAttribute[Any], permission: str) -> ColumnElement[bool]:
    """SQL condition: the record's organization is one where ``permission`` holds org-wide."""
    return scope_org_clause(column, current_principal().scope(permission))


def device_clause(permission: str) -> ColumnElement[bool]:
    """SQL condition: the device is in scope org-wide, through its site, through a group, or
    as one the caller owns or is a guest of (ChargerAccess)."""
    return scope_device_clause(current_principal().scope(permission))


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
    """The organization a new record goes to: the given one, else the caller's only one.

    Omitted, it is required when the caller may ``permission`` in more than one organization
    (a platform admin, a user with roles in two): guessing put records in the wrong tenant.
    An organization the caller may not create in is reported on the field, as if unknown.
    """
    principal = current_principal()
    if organization_id is None:
        orgs = principal.scope(permission).orgs
        if orgs is None or len(orgs) > 1:
            field_error(
                field,
                "Missing data for required field: you may "
                f"{permission} in more than one organization, say which.",
            )
        organization_id = next(iter(orgs)) if orgs else principal.organization_id
    if request_session().get(Organization, organization_id) is None or not principal.may_in(
        permission, organization_id
    ):
        field_error(field, f"unknown organization, or you may not {permission} there")
    return organization_id
