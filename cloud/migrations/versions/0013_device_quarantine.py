"""device quarantine: why and since when a device may only publish its status

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 06:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quarantine_reason", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("quarantined_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("quarantined_at")
        batch_op.drop_column("quarantine_reason")
