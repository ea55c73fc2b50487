"""ocpp chargers: the bridge instance that holds each one (its will marks them offline)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ocpp_chargers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bridge_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_ocpp_chargers_bridge_id"), ["bridge_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ocpp_chargers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ocpp_chargers_bridge_id"))
        batch_op.drop_column("bridge_id")
