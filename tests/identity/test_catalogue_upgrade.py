"""Permissions added to the catalogue reach the system roles of a database seeded before them
(migration 0010 for the card permissions, ``sync_catalogue`` for later ones), and never come
back where an administrator took them away, nor into custom roles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from cloud.db import Database
from cloud.db.migrate import upgrade
from cloud.identity.models import Permission, Role, role_permissions
from cloud.identity.seed import sync_catalogue
from cloud.organizations.models import Organization

CARDS = {"cards:read", "cards:write"}
# What the seed gives each system role of the card permissions (cloud.identity.permissions).
EXPECTED = {
    "platform-admin": CARDS,
    "organization-admin": CARDS,
    "operator": CARDS,
    "support": {"cards:read"},
    "owner": {"cards:read"},
    "installer": set(),
    "guest": set(),
    "monitoring": set(),
}
PREVIOUS_HEAD = "0008"  # the head of the release that seeded without these rules


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_mariadb_database")
    return make()


def _seed_previous_release(url: str, strip: dict[str, set[str]]) -> Database:
    """A database at the previous head, seeded, then ``strip``: role name -> permissions the
    role does not hold (as the previous release's seed left them, or an administrator did)."""
    upgrade(url, PREVIOUS_HEAD)
    database = Database(url)
    with database.transaction() as session:
        sync_catalogue(session)
        org = Organization(slug="acme", name="Acme")
        session.add(org)
        session.flush()
        custom = Role(organization_id=org.id, name="front-desk", description="custom")
        custom.permissions = [session.get(Permission, "devices:read")]  # type: ignore[list-item]
        session.add(custom)
        for name, names in strip.items():
            role = session.scalar(
                select(Role).where(Role.organization_id.is_(None), Role.name == name)
            )
            assert role is not None
            session.execute(
                delete(role_permissions).where(
                    role_permissions.c.role_id == role.id,
                    role_permissions.c.permission.in_(sorted(names)),
                )
            )
    return database


def _held(database: Database) -> dict[str, set[str]]:
    with database.transaction() as session:
        return {
            role.name: set(role.permission_names)
            for role in session.scalars(select(Role).execution_options(populate_existing=True))
        }


def test_system_roles_seeded_before_the_card_permissions_get_them(url: str) -> None:
    # The previous release's sync gave new permissions to platform-admin only.
    strip = {name: CARDS for name in EXPECTED if name != "platform-admin"}
    database = _seed_previous_release(url, strip)
    try:
        before = _held(database)
        assert all(not (before[name] & CARDS) for name in strip)
        upgrade(url)
        after = _held(database)
        for name, expected in EXPECTED.items():
            assert after[name] & CARDS == expected, name
            assert after[name] - CARDS == before[name] - CARDS, name  # nothing else touched
        assert after["front-desk"] == {"devices:read"}  # custom roles are left alone
        with database.transaction() as session:
            sync_catalogue(session)  # the next start changes nothing
        assert _held(database) == after
    finally:
        database.engine.dispose()


def test_a_card_permission_an_admin_removed_stays_removed(url: str) -> None:
    # Seeded with the card permissions; an admin took cards:write from operator, and every
    # card permission from support.
    database = _seed_previous_release(url, {"operator": {"cards:write"}, "support": CARDS})
    try:
        upgrade(url)
        after = _held(database)
        assert after["operator"] & CARDS == {"cards:read"}
        # Holding none is what an old seed looks like: support gets its card permission back.
        assert after["support"] & CARDS == {"cards:read"}
        assert after["organization-admin"] & CARDS == CARDS
    finally:
        database.engine.dispose()


def test_sync_gives_a_new_permission_to_the_system_roles_that_should_hold_it(url: str) -> None:
    upgrade(url)
    database = Database(url)
    try:
        with database.transaction() as session:
            sync_catalogue(session)
            # "sessions:read" as if the catalogue had just gained it: no row, no holder.
            session.execute(delete(Permission).where(Permission.name == "sessions:read"))
            org = Organization(slug="acme", name="Acme")
            session.add(org)
            session.flush()
            session.add(Role(organization_id=org.id, name="custom", description=""))
            # An administrator took a permission that already existed from the operator.
            operator = session.scalar(select(Role).where(Role.name == "operator"))
            assert operator is not None
            operator.permissions = [p for p in operator.permissions if p.name != "cards:write"]
        with database.transaction() as session:
            sync_catalogue(session)
        held = _held(database)
        for name in ("platform-admin", "organization-admin", "operator", "support", "owner"):
            assert "sessions:read" in held[name], name
        assert "sessions:read" not in held["installer"]
        assert held["custom"] == set()
        assert "cards:write" not in held["operator"]  # not new: stays removed
    finally:
        database.engine.dispose()
