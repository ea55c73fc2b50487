"""REST resources: /users and their role assignments."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlalchemy import Select, or_, select

from cloud.access import outbox
from cloud.access.authlists import CHARGE
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.errors import field_error, not_found
from cloud.api.identity.assignments import build_assignment, describe
from cloud.api.identity.schemas import (
    AssignmentSchema,
    UserQuerySchema,
    UserSchema,
    UserUpdateSchema,
)
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import get_scoped, org_clause, target_org
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.identity.models import RoleAssignment, User
from cloud.identity.passwords import SecretHasher
from cloud.identity.rails import check_not_duplicate, keep_a_platform_admin

users = Blueprint(
    "users", __name__, url_prefix="/users", description="Users and the roles they hold."
)


def hasher() -> SecretHasher:
    """The app's secret hasher."""
    service: SecretHasher = current_app.extensions["ampfleet.hasher"]
    return service


@users.route("")
class Users(MethodView):
    @requires("users:read")
    @users.arguments(UserQuerySchema, location="query")
    @users.response(200, UserSchema(many=True))
    @users.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List users, by organization, e-mail or a substring."""
        stmt = select(User).where(org_clause(User.organization_id, "users:read"))
        if "organization_id" in query:
            stmt = stmt.where(User.organization_id == query["organization_id"])
        if "email" in query:
            stmt = stmt.where(User.email == query["email"].lower())
        if "q" in query:
            pattern = "%" + query["q"].replace("%", r"\%").replace("_", r"\_") + "%"
            stmt = stmt.where(
                or_(User.email.like(pattern, escape="\\"), User.name.like(pattern, escape="\\"))
            )
        return stmt.order_by(User.id)

    @requires("users:write")
    @users.arguments(UserSchema)
    @users.response(201, UserSchema)
    def post(self, data: dict[str, Any]) -> User:
        """Create a user, optionally with role assignments."""
        org_id = target_org(data["organization_id"], "users:write")
        email = data["email"].lower()
        ensure_unique(User, "email", email)
        password = data["password"]
        user = User(
            organization_id=org_id,
            email=email,
            name=data["name"],
            is_active=data["is_active"],
            password_hash=hasher().hash(password) if password else None,
        )
        for index, spec in enumerate(data["roles"]):
            assignment = build_assignment(spec, org_id, f"roles.{index}")
            check_not_duplicate(user.assignments, assignment, f"roles.{index}.role_id")
            user.assignments.append(assignment)
        session = request_session()
        session.add(user)
        session.flush()
        record(
            session,
            current_principal(),
            "user.create",
            "user",
            user.id,
            org_id,
            {"email": email, "roles": [describe(a) for a in user.assignments]},
        )
        commit()
        return user


@users.route("/<id:user_id>", endpoint="User")
class UserItem(MethodView):
    @requires("users:read")
    @users.etag
    @users.response(200, UserSchema)
    def get(self, user_id: int) -> User:
        """Read a user."""
        return get_scoped(User, user_id, "users:read", "user")

    @requires("users:write")
    @users.etag
    @users.arguments(UserUpdateSchema)
    @users.response(200, UserSchema)
    def patch(self, data: dict[str, Any], user_id: int) -> User:
        """Update a user's name, password or active flag."""
        user = get_scoped(User, user_id, "users:write", "user", read="users:read")
        users.check_etag(user, UserSchema)
        password = data.pop("password", None)
        diff = changes(user, data)
        if password is not None:
            user.password_hash = hasher().hash(password)
            diff["password"] = "changed"  # noqa: S105 - never the value, nor its hash
        if "is_active" in diff:
            keep_a_platform_admin(request_session(), f"deactivating {user.email}")
            # An inactive user's cards are on no list; active again, they come back.
            outbox.request_for_user(request_session(), user.id)
        if diff:
            record(
                request_session(),
                current_principal(),
                "user.update",
                "user",
                user.id,
                user.organization_id,
                diff,
            )
        commit()
        return user

    @requires("users:delete")
    @users.etag
    @users.response(204)
    def delete(self, user_id: int) -> None:
        """Delete a user."""
        user = get_scoped(User, user_id, "users:delete", "user", read="users:read")
        users.check_etag(user, UserSchema)
        principal = current_principal()
        if principal.kind == "user" and principal.id == user.id:
            field_error("user_id", "you cannot delete yourself", status=409, location="path")
        session = request_session()
        record(
            session,
            principal,
            "user.delete",
            "user",
            user.id,
            user.organization_id,
            {"email": user.email},
        )
        outbox.request_for_user(session, user.id)  # their cards leave the lists with them
        session.delete(user)
        keep_a_platform_admin(session, f"deleting {user.email}")
        commit()


@users.route("/<id:user_id>/role-assignments", endpoint="Assignments")
class UserAssignments(MethodView):
    @requires("users:read")
    @users.response(200, AssignmentSchema(many=True))
    def get(self, user_id: int) -> list[RoleAssignment]:
        """The user's role assignments."""
        return get_scoped(User, user_id, "users:read", "user").assignments

    @requires("users:write")
    @users.arguments(AssignmentSchema)
    @users.response(201, AssignmentSchema)
    def post(self, data: dict[str, Any], user_id: int) -> RoleAssignment:
        """Give the user a role (in its organization, optionally narrowed)."""
        user = get_scoped(User, user_id, "users:write", "user", read="users:read")
        assignment = build_assignment(data, user.organization_id)
        check_not_duplicate(user.assignments, assignment)
        user.assignments.append(assignment)
        session = request_session()
        session.flush()
        record(
            session,
            current_principal(),
            "user.assign_role",
            "user",
            user.id,
            user.organization_id,
            describe(assignment),
        )
        if CHARGE in assignment.role.permission_names:
            outbox.request_for_user(session, user.id)  # their cards may charge in more places
        commit()
        return assignment


@users.route("/<id:user_id>/role-assignments/<id:assignment_id>", endpoint="Assignment")
class UserAssignmentItem(MethodView):
    @requires("users:write")
    @users.response(204)
    def delete(self, user_id: int, assignment_id: int) -> None:
        """Take a role away from the user."""
        user = get_scoped(User, user_id, "users:write", "user", read="users:read")
        assignment = next((a for a in user.assignments if a.id == assignment_id), None)
        if assignment is None:
            not_found("role assignment")
        record(
            request_session(),
            current_principal(),
            "user.unassign_role",
            "user",
            user.id,
            user.organization_id,
            describe(assignment),
        )
        user.assignments.remove(assignment)
        keep_a_platform_admin(
            request_session(), f"taking the role {assignment.role.name} from {user.email}"
        )
        if CHARGE in assignment.role.permission_names:
            outbox.request_for_user(request_session(), user.id)
        commit()
