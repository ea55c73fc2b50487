"""manufacturing: production batches and their serials, MAC pools; devices approved and bound
to their hardware IDs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 07:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloud.db

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "production_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("hardware_family", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=False),
        sa.Column(
            "state",
            sa.Enum("pending", "approved", name="batchstate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_by_name", sa.String(length=200), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_by_name", sa.String(length=200), nullable=True),
        sa.Column("approved_at", cloud.db.UTCDateTime(), nullable=True),
        sa.Column("created_at", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_production_batches_organization_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_production_batches")),
    )
    with op.batch_alter_table("production_batches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_production_batches_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_production_batches_state"), ["state"], unique=False)

    op.create_table(
        "batch_serials",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("expected_chip_id", sa.String(length=32), nullable=True),
        sa.Column("expected_slave_ids", sa.JSON(), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("enrolled_at", cloud.db.UTCDateTime(), nullable=True),
        sa.Column("enrolled_by", sa.String(length=64), nullable=True),
        sa.Column("firmware_version", sa.String(length=64), nullable=True),
        sa.Column("certificate_serial", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["production_batches.id"],
            name=op.f("fk_batch_serials_batch_id_production_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_batch_serials")),
    )
    with op.batch_alter_table("batch_serials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_serials_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "mac_pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("first", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("next", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_mac_pools_organization_id_organizations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mac_pools")),
    )
    with op.batch_alter_table("mac_pools", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mac_pools_organization_id"), ["organization_id"], unique=False
        )

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_at", cloud.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("approved_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("chip_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("slave_ids", sa.JSON(), nullable=True))
    # Devices registered before the whitelist existed were registered by an admin, which was the
    # approval then: they stay in service.
    op.execute("UPDATE devices SET approved_at = created_at, approved_by = 'system:migration'")
    with op.batch_alter_table("device_status", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_hardware", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_status", schema=None) as batch_op:
        batch_op.drop_column("reported_hardware")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("slave_ids")
        batch_op.drop_column("chip_id")
        batch_op.drop_column("approved_by")
        batch_op.drop_column("approved_at")
    # Dropping a table drops its indexes (MariaDB refuses to drop one an FK needs first).
    op.drop_table("mac_pools")
    op.drop_table("batch_serials")
    op.drop_table("production_batches")
