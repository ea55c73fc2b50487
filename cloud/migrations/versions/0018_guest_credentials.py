"""guest credentials: the platform-signed passes guests charge with offline

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-07 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloud.db

revision = "0018"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guest_credentials",
        sa.Column("id", sa.String(length=20), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("not_before", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("not_after", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("issued_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_guest_credentials_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_guest_credentials_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guest_credentials")),
    )
    with op.batch_alter_table("guest_credentials", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_guest_credentials_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_guest_credentials_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    # The table takes its indexes with it (MariaDB refuses to drop an index a foreign key uses).
    op.drop_table("guest_credentials")
