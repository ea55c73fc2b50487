"""pairing: each charger's two codes (charger code, box code hash) and failed pairing attempts

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 07:20:00.000000

The ``released`` lifecycle state needs no change: ``devices.state`` is a non-native enum
(a VARCHAR(16) without a CHECK constraint), checked in Python.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloud.db

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_codes",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("charger_code", sa.String(length=16), nullable=False),
        sa.Column("box_code_hash", sa.String(length=256), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("issued_at", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("released_at", cloud.db.UTCDateTime(), nullable=True),
        sa.Column("released_by", sa.String(length=64), nullable=True),
        sa.Column("released_generation", sa.Integer(), nullable=True),
        sa.Column("box_code_used_at", cloud.db.UTCDateTime(), nullable=True),
        sa.Column("box_code_used_by", sa.Integer(), nullable=True),
        sa.Column("created_at", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["box_code_used_by"],
            ["users.id"],
            name=op.f("fk_device_codes_box_code_used_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_codes_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_codes")),
        sa.UniqueConstraint("charger_code", name=op.f("uq_device_codes_charger_code")),
    )
    op.create_table(
        "pairing_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("failed_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_pairing_failures_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_pairing_failures_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairing_failures")),
    )
    with op.batch_alter_table("pairing_failures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pairing_failures_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_pairing_failures_failed_at"), ["failed_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_pairing_failures_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    # The indexes go with their table (MariaDB refuses to drop one a foreign key needs).
    op.drop_table("pairing_failures")
    op.drop_table("device_codes")
