"""Who is calling, and what they may do where: the principal and its grants.

A grant is one role assignment resolved to its permissions. Org-wide grants cover everything
in the organization; narrowed grants cover one site's or one device group's devices. A grant
holding ``platform:admin`` makes its permissions hold in every organization.

A user may also own, or be a guest of, single chargers (``ChargerAccess``): each such charger
adds the permissions of the system role of that name (``owner``, ``guest``) on that one device,
a guest's only inside the validity window the owner set. These never hold org-wide.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import MAX_ID
from cloud.identity import InvalidTokenError
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import ApiClient, Role, RoleAssignment, User
from cloud.identity.permissions import PLATFORM_ADMIN
from cloud.identity.tokens import Claims


@dataclasses.dataclass(frozen=True)
class Grant:
    """Permissions held in one organization, optionally narrowed to a site or device group."""

    organization_id: int
    permissions: frozenset[str]
    site_id: int | None = None
    device_group_id: int | None = None

    @property
    def org_wide(self) -> bool:
        """True when the grant is not narrowed."""
        return self.site_id is None and self.device_group_id is None


@dataclasses.dataclass(frozen=True)
class DeviceAccess:
    """Permissions on one charger held as its owner or guest (a ``ChargerAccess`` in force)."""

    device_id: str
    level: AccessLevel
    permissions: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where a permission holds: all orgs (``orgs is None``), some orgs, sites, groups and
    single devices (owned or shared with a guest)."""

    orgs: frozenset[int] | None
    sites: frozenset[int] = frozenset()
    groups: frozenset[int] = frozenset()
    devices: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    kind: str  # user | client | system
    id: int
    name: str
    organization_id: int
    grants: tuple[Grant, ...]
    access: tuple[DeviceAccess, ...] = ()

    @property
    def audit_id(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind}:{self.id}"

    @property
    def is_platform_admin(self) -> bool:
        """True when some grant holds platform:admin."""
        return any(PLATFORM_ADMIN in g.permissions for g in self.grants)

    def may(self, permission: str) -> bool:
        """True when the permission holds somewhere (the route-level check)."""
        return any(permission in g.permissions for g in self.grants) or any(
            permission in a.permissions for a in self.access
        )

    def scope(self, permission: str) -> Scope:
        """Where ``permission`` holds."""
        if any(
            PLATFORM_ADMIN in g.permissions and permission in g.permissions for g in self.grants
        ):
            return Scope(orgs=None)
        holding = [g for g in self.grants if permission in g.permissions]
        return Scope(
            orgs=frozenset(g.organization_id for g in holding if g.org_wide),
            sites=frozenset(g.site_id for g in holding if g.site_id is not None),
            groups=frozenset(g.device_group_id for g in holding if g.device_group_id is not None),
            devices=frozenset(a.device_id for a in self.access if permission in a.permissions),
        )

    def access_level(self, device_id: str) -> AccessLevel | None:
        """``owner`` or ``guest`` when the caller holds that access to the device now."""
        return next((a.level for a in self.access if a.device_id == device_id), None)

    def may_in(self, permission: str, organization_id: int) -> bool:
        """True when ``permission`` holds for the whole of ``organization_id``."""
        orgs = self.scope(permission).orgs
        return orgs is None or organization_id in orgs

    def permissions_in(self, organization_id: int) -> frozenset[str]:
        """Every permission held org-wide in ``organization_id`` (the ceiling for delegation)."""
        held: set[str] = set()
        for g in self.grants:
            if g.org_wide and (
                g.organization_id == organization_id or PLATFORM_ADMIN in g.permissions
            ):
                held |= g.permissions
        return frozenset(held)


def grants_of(assignments: Iterable[RoleAssignment]) -> tuple[Grant, ...]:
    """Resolve role assignments into grants."""
    return tuple(
        Grant(
            organization_id=a.organization_id,
            permissions=frozenset(a.role.permission_names),
            site_id=a.site_id,
            device_group_id=a.device_group_id,
        )
        for a in assignments
    )


def access_of(
    session: Session, user_id: int, at: dt.datetime | None = None
) -> tuple[DeviceAccess, ...]:
    """The chargers ``user_id`` owns or is a guest of at ``at`` (now), with their permissions.

    The permissions are those of the system roles ``owner`` and ``guest`` as stored (a
    platform admin may edit them); a deleted role grants nothing.
    """
    rows = list(session.scalars(select(ChargerAccess).where(ChargerAccess.user_id == user_id)))
    if not rows:
        return ()
    at = at or dt.datetime.now(dt.UTC)
    roles = {
        role.name: frozenset(role.permission_names)
        for role in session.scalars(
            select(Role).where(
                Role.organization_id.is_(None),
                Role.name.in_([level.value for level in AccessLevel]),
            )
        )
    }
    return tuple(
        DeviceAccess(row.device_id, row.level, roles.get(row.level.value, frozenset()))
        for row in sorted(rows, key=lambda r: r.device_id)
        if in_window(row, at)
    )


def in_window(access: ChargerAccess, at: dt.datetime) -> bool:
    """True when ``access`` holds at ``at``: always for owners, inside the window for guests."""
    if access.level is AccessLevel.OWNER:
        return True
    return (access.valid_from is None or access.valid_from <= at) and (
        access.valid_until is None or at < access.valid_until
    )


def _user_principal(session: Session, user: User) -> Principal:
    return Principal(
        "user",
        user.id,
        user.email,
        user.organization_id,
        grants_of(user.assignments),
        access_of(session, user.id),
    )


def load_principal(session: Session, claims: Claims) -> Principal:
    """The principal a verified token names; InvalidTokenError if it is gone or disabled."""
    if claims.external:
        user = session.scalar(select(User).where(User.email == claims.email))
        if user is None or not user.is_active:
            raise InvalidTokenError("no active user matches the token's e-mail")
        return _user_principal(session, user)
    kind, _, raw_id = claims.subject.partition(":")
    # isdigit() alone lets "²" through to int(); ids past MAX_ID overflow SQLite's INTEGER.
    if not (raw_id.isascii() and raw_id.isdigit()) or int(raw_id) > MAX_ID:
        raise InvalidTokenError("the token's subject is malformed")
    if kind == "user":
        user = session.get(User, int(raw_id))
        if user is None or not user.is_active or user.organization_id != claims.organization_id:
            raise InvalidTokenError("the token's user no longer exists or is disabled")
        return _user_principal(session, user)
    if kind == "client":
        client = session.get(ApiClient, int(raw_id))
        if client is None or not client.is_active:
            raise InvalidTokenError("the token's client no longer exists or is disabled")
        return Principal(
            "client",
            client.id,
            client.client_id,
            client.organization_id,
            grants_of(client.assignments),
        )
    raise InvalidTokenError("the token's subject is malformed")
