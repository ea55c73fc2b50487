"""card permissions for system roles seeded before them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 03:30:00.000000

``cards:read`` and ``cards:write`` came with the charging release, after installations had
been seeded. ``sync_catalogue`` then created the permissions but gave them to platform-admin
only: on such a database an owner cannot see their own cards and an operator cannot register
one. This gives the system roles what the seed gives them.

A role that already holds one of its card permissions was seeded with them (a fresh install of
the charging release or later): what it lacks an administrator removed, and stays removed.
Custom roles (those of an organization) are never touched. The grants are frozen here, not
read from ``cloud.identity.permissions``: a migration must mean the same thing forever.
``sync_catalogue`` gives permissions added later to the system roles itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DESCRIPTIONS = {
    "cards:read": "Read RFID cards: one's own, or org-wide every card of the organization.",
    "cards:write": "Register, enable, disable and delete RFID cards.",
}
# What the seed of the charging release gives each system role of the card permissions.
GRANTS = {
    "platform-admin": {"cards:read", "cards:write"},
    "organization-admin": {"cards:read", "cards:write"},
    "operator": {"cards:read", "cards:write"},
    "support": {"cards:read"},
    "owner": {"cards:read"},
}

permissions = sa.table("permissions", sa.column("name"), sa.column("description"))
roles = sa.table("roles", sa.column("id"), sa.column("name"), sa.column("organization_id"))
role_permissions = sa.table("role_permissions", sa.column("role_id"), sa.column("permission"))


def upgrade() -> None:
    conn = op.get_bind()
    system_roles = conn.execute(
        sa.select(roles.c.id, roles.c.name).where(
            roles.c.organization_id.is_(None), roles.c.name.in_(sorted(GRANTS))
        )
    ).all()
    if not system_roles:
        return  # an empty database: the seed that follows gives every role its permissions
    stored = set(conn.scalars(sa.select(permissions.c.name)))
    missing = [name for name in sorted(DESCRIPTIONS) if name not in stored]
    if missing:
        op.bulk_insert(permissions, [{"name": n, "description": DESCRIPTIONS[n]} for n in missing])
    for role_id, name in system_roles:
        held = set(
            conn.scalars(
                sa.select(role_permissions.c.permission).where(role_permissions.c.role_id == role_id)
            )
        )
        if held & GRANTS[name]:
            continue  # seeded with them: an administrator removed the others
        op.bulk_insert(
            role_permissions, [{"role_id": role_id, "permission": p} for p in sorted(GRANTS[name])]
        )


def downgrade() -> None:
    # Nothing to undo: the previous release knows these permissions and lets roles hold them.
    pass
