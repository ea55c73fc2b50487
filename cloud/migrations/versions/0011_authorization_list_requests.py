"""authorization list requests: the API asks, the charging worker publishes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloud.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authorization_list_requests",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("requested_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_authorization_list_requests_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_authorization_list_requests")),
    )
    with op.batch_alter_table("authorization_list_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_authorization_list_requests_requested_at"),
            ["requested_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_list_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authorization_list_requests_requested_at"))
    op.drop_table("authorization_list_requests")
