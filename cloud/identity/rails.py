"""Safety rails: the changes that would lock every administrator out are refused.

The platform is administered by the active users holding ``platform:admin`` (through any role,
the seeded ``platform-admin`` or a custom one). Unassigning, deactivating or deleting the last of
them, or editing away the permission, leaves an installation that answers 403 to everyone and
that only the CLI can repair, so the API refuses it (:func:`keep_a_platform_admin`, checked
after the change is flushed, so that every route that can remove an administrator asks the same
question of the database). System roles keep the permissions their holders need to administer
(``SYSTEM_ROLE_FLOORS``, :func:`check_role_floor`), and a holder never gets the same role
assignment twice (:func:`check_not_duplicate`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.identity import DuplicateAssignmentError, LastAdminError, RoleFloorError
from cloud.identity.models import Role, RoleAssignment, User, role_permissions
from cloud.identity.permissions import PLATFORM_ADMIN, SYSTEM_ROLE_FLOORS


def active_platform_admins(session: Session) -> int:
    """How many active users hold platform:admin through some role assignment."""
    return int(
        session.scalar(
            select(func.count(func.distinct(User.id)))
            .join(RoleAssignment, RoleAssignment.user_id == User.id)
            .join(role_permissions, role_permissions.c.role_id == RoleAssignment.role_id)
            .where(User.is_active.is_(True), role_permissions.c.permission == PLATFORM_ADMIN)
        )
        or 0
    )


def keep_a_platform_admin(session: Session, change: str) -> None:
    """Raise :class:`LastAdminError` if, once ``change`` (pending in ``session``) is flushed, no
    active user holds platform:admin. The caller rolls back."""
    session.flush()
    if active_platform_admins(session) == 0:
        raise LastAdminError(
            f"{change} would leave no active platform admin, and nobody could administer the "
            "platform any more; give another user the platform-admin role first"
        )


def check_role_floor(role: Role, permissions: Iterable[str]) -> None:
    """Raise :class:`RoleFloorError` if the system ``role`` would lose one of its floor's
    permissions (custom roles have no floor)."""
    if role.organization_id is not None:
        return
    missing = SYSTEM_ROLE_FLOORS.get(role.name, frozenset()) - set(permissions)
    if missing:
        raise RoleFloorError(role.name, frozenset(missing))


def check_not_duplicate(
    held: Iterable[RoleAssignment], new: RoleAssignment, field: str = "role_id"
) -> None:
    """Raise :class:`DuplicateAssignmentError` if ``held`` has an assignment identical to ``new``
    (same role, organization, site and device group)."""
    key = _key(new)
    if any(_key(a) == key for a in held if a is not new):
        raise DuplicateAssignmentError(field)


def _key(a: RoleAssignment) -> tuple[int, int, int | None, int | None]:
    return (a.role_id, a.organization_id, a.site_id, a.device_group_id)
