"""REST resources: /roles and /permissions."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, func, or_, select

from cloud.access import outbox
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.identity.assignments import check_delegable
from cloud.api.identity.schemas import (
    PermissionSchema,
    RoleQuerySchema,
    RoleSchema,
    RoleUpdateSchema,
)
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import org_clause, target_org
from cloud.audit.service import record
from cloud.db import request_session
from cloud.identity.models import Permission, Role, RoleAssignment
from cloud.identity.permissions import CATALOGUE, PLATFORM_ADMIN
from cloud.identity.rails import check_role_floor, keep_a_platform_admin

roles = Blueprint(
    "roles", __name__, url_prefix="/roles", description="Roles: editable lists of permissions."
)
permissions = Blueprint(
    "permissions", __name__, url_prefix="/permissions", description="The permission catalogue."
)


def _permission_rows(names: list[str]) -> list[Permission]:
    session = request_session()
    return [
        session.get(Permission, name) or Permission(name=name, description=CATALOGUE[name])
        for name in sorted(set(names))
    ]


def _get_role(role_id: int, permission: str) -> Role:
    """A role the caller can see; for changes, 403 on system roles unless platform admin."""
    role = request_session().get(Role, role_id)
    principal = current_principal()
    if role is None:
        not_found("role")
    if role.organization_id is None:
        if permission != "roles:read" and not principal.is_platform_admin:
            forbidden(PLATFORM_ADMIN)
        return role
    if not principal.may_in(permission, role.organization_id):
        if principal.may_in("roles:read", role.organization_id):
            forbidden(permission)
        not_found("role")
    return role


@roles.route("")
class Roles(MethodView):
    @requires("roles:read")
    @roles.arguments(RoleQuerySchema, location="query")
    @roles.response(200, RoleSchema(many=True))
    @roles.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List the system roles and the roles of the caller's organizations."""
        stmt = select(Role).where(
            or_(Role.organization_id.is_(None), org_clause(Role.organization_id, "roles:read"))
        )
        if "organization_id" in query:
            stmt = stmt.where(
                or_(
                    Role.organization_id.is_(None), Role.organization_id == query["organization_id"]
                )
            )
        if "name" in query:
            stmt = stmt.where(Role.name == query["name"])
        return stmt.order_by(Role.id)

    @requires("roles:write")
    @roles.arguments(RoleSchema)
    @roles.response(201, RoleSchema)
    def post(self, data: dict[str, Any]) -> Role:
        """Create a role in an organization. It may hold only permissions the caller holds."""
        org_id = target_org(data["organization_id"], "roles:write")
        session = request_session()
        if session.scalar(
            select(Role).where(Role.organization_id.is_(None), Role.name == data["name"])
        ):
            field_error("name", "is the name of a system role", status=409)
        ensure_unique(Role, "name", data["name"], organization_id=org_id)
        check_delegable(data["permission_names"], org_id, "permissions")
        role = Role(
            organization_id=org_id,
            name=data["name"],
            description=data["description"],
            permissions=_permission_rows(data["permission_names"]),
        )
        session.add(role)
        session.flush()
        record(
            session,
            current_principal(),
            "role.create",
            "role",
            role.id,
            org_id,
            {"name": role.name, "permissions": role.permission_names},
        )
        commit()
        return role


@roles.route("/<id:role_id>", endpoint="Role")
class RoleItem(MethodView):
    @requires("roles:read")
    @roles.etag
    @roles.response(200, RoleSchema)
    def get(self, role_id: int) -> Role:
        """Read a role."""
        return _get_role(role_id, "roles:read")

    @requires("roles:write")
    @roles.etag
    @roles.arguments(RoleUpdateSchema)
    @roles.response(200, RoleSchema)
    def patch(self, data: dict[str, Any], role_id: int) -> Role:
        """Change a role's description or permissions (system roles: platform admins only)."""
        role = _get_role(role_id, "roles:write")
        roles.check_etag(role, RoleSchema)
        details: dict[str, Any] = {}
        if "permissions" in data:
            if role.organization_id is not None:
                check_delegable(data["permissions"], role.organization_id, "permissions")
            check_role_floor(role, data["permissions"])
            before = role.permission_names
            role.permissions = _permission_rows(data["permissions"])
            keep_a_platform_admin(request_session(), f"editing the role {role.name}")
            if before != role.permission_names:
                details["permissions"] = [before, role.permission_names]
            if outbox.touches_charging(before, role.permission_names):
                # Its holders' cards join or leave the chargers' local lists.
                outbox.request_for_role(request_session(), role)
        if "description" in data and data["description"] != role.description:
            details["description"] = [role.description, data["description"]]
            role.description = data["description"]
        if details:
            record(
                request_session(),
                current_principal(),
                "role.update",
                "role",
                role.id,
                role.organization_id,
                details,
            )
        commit()
        return role

    @requires("roles:delete")
    @roles.etag
    @roles.response(204)
    def delete(self, role_id: int) -> None:
        """Delete a role that nobody holds."""
        role = _get_role(role_id, "roles:delete")
        roles.check_etag(role, RoleSchema)
        session = request_session()
        held = session.scalar(select(func.count()).where(RoleAssignment.role_id == role.id))
        if held:
            field_error(
                "role_id",
                f"the role is held by {held} assignment(s); remove them first",
                status=409,
                location="path",
            )
        record(
            session,
            current_principal(),
            "role.delete",
            "role",
            role.id,
            role.organization_id,
            {"name": role.name},
        )
        if "charging:start" in role.permission_names:
            outbox.request_for_role(session, role)  # the owner and guest levels read it
        session.delete(role)
        keep_a_platform_admin(session, f"deleting the role {role.name}")
        commit()


@permissions.route("")
class Permissions(MethodView):
    @requires("roles:read")
    @permissions.response(200, PermissionSchema(many=True))
    @permissions.paginated()
    def get(self) -> Select[Any]:
        """The permission catalogue: every name a role can hold."""
        return select(Permission).order_by(Permission.name)
