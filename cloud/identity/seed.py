"""Seeding: the permission catalogue, the system roles, the platform organization and admin."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.identity.models import Permission, Role, RoleAssignment, User
from cloud.identity.passwords import SecretHasher
from cloud.identity.permissions import CATALOGUE, PLATFORM_ADMIN, SYSTEM_ROLES
from cloud.identity.rails import active_platform_admins
from cloud.organizations.models import PLATFORM_SLUG, Organization

log = logging.getLogger(__name__)


def sync_catalogue(session: Session) -> None:
    """Make the permissions table equal the catalogue; create missing system roles.

    Existing system roles are left as edited, except that a permission new to the catalogue
    (not yet in the table) is given to every system role whose seed holds it, and that
    platform-admin always holds every permission, so a new permission is never out of
    everyone's reach. A permission already in the table that a system role lacks was taken
    from it by an administrator: it stays taken. (Permissions added before this rule are
    migrated: ``cloud/migrations/versions/0009``.)
    """
    stored = {p.name: p for p in session.scalars(select(Permission))}
    new: set[str] = set()
    for name, description in CATALOGUE.items():
        if name in stored:
            stored[name].description = description
        else:
            stored[name] = Permission(name=name, description=description)
            session.add(stored[name])
            new.add(name)
    for name in set(stored) - set(CATALOGUE):
        session.delete(stored.pop(name))
    session.flush()
    for role_name, (description, names) in SYSTEM_ROLES.items():
        role = session.scalar(
            select(Role).where(Role.organization_id.is_(None), Role.name == role_name)
        )
        if role is None:
            role = Role(
                name=role_name,
                description=description,
                permissions=[stored[n] for n in sorted(names)],
            )
            session.add(role)
        elif role_name == "platform-admin":
            role.permissions = [stored[n] for n in sorted(CATALOGUE)]
        else:
            held = set(role.permission_names)
            added = sorted((new & names) - held)
            if added:
                role.permissions = [*role.permissions, *(stored[n] for n in added)]
                log.info("system role %s given the new permissions %s", role_name, added)
    platform = session.scalar(select(Organization).where(Organization.slug == PLATFORM_SLUG))
    if platform is None:
        session.add(Organization(slug=PLATFORM_SLUG, name="Platform operators"))
    session.flush()


def create_platform_admin(
    session: Session, hasher: SecretHasher, email: str, password: str
) -> User:
    """A new user in the platform organization holding the platform-admin role."""
    platform = session.scalar(select(Organization).where(Organization.slug == PLATFORM_SLUG))
    role = _platform_admin_role(session)
    if platform is None or role is None:
        raise RuntimeError("run sync_catalogue first")
    user = User(
        organization_id=platform.id,
        email=email.lower(),
        name="Platform admin",
        password_hash=hasher.hash(password),
    )
    user.assignments.append(RoleAssignment(role=role, organization_id=platform.id))
    session.add(user)
    session.flush()
    log.info("created platform admin %s (%s)", email, PLATFORM_ADMIN)
    return user


def restore_platform_admin(session: Session, user: User) -> bool:
    """Make ``user`` an active holder of the platform-admin role again (recovery of a locked-out
    installation); True when something had to change."""
    role = _platform_admin_role(session)
    if role is None:
        raise RuntimeError("run sync_catalogue first")
    changed = not user.is_active
    user.is_active = True
    if not any(
        a.role_id == role.id and a.site_id is None and a.device_group_id is None
        for a in user.assignments
    ):
        user.assignments.append(
            RoleAssignment(role=role, role_id=role.id, organization_id=user.organization_id)
        )
        changed = True
    session.flush()
    return changed


def ensure_admin(
    session: Session, hasher: SecretHasher, email: str, password: str, data_dir: Path
) -> str | None:
    """Make sure some active user holds platform:admin: on first start create the platform admin
    ``email``; on an installation whose admins were all deactivated or lost the role, restore
    the user ``email`` if it exists (active again, platform-admin again, password kept) and
    create it if not.

    Returns the generated password when one had to be made (it is also written, mode 0600, to
    ``<data_dir>/initial-admin-password``), else None.
    """
    if active_platform_admins(session):
        return None
    existing = session.scalar(select(User).where(User.email == email.lower()))
    if existing is not None:
        restore_platform_admin(session, existing)
        log.warning("no active platform admin: restored %s (%s)", email, PLATFORM_ADMIN)
        return None
    generated = None
    if not password:
        generated = password = secrets.token_urlsafe(15)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "initial-admin-password"
        path.touch(mode=0o600)
        path.write_text(password + "\n")
    create_platform_admin(session, hasher, email, password)
    return generated


def _platform_admin_role(session: Session) -> Role | None:
    return session.scalar(
        select(Role).where(Role.organization_id.is_(None), Role.name == "platform-admin")
    )
