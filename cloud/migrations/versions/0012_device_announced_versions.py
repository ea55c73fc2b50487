"""device announced versions: the parameter schema a device announced, on the device

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schema_version", sa.String(length=64), nullable=True))
    # Devices that announced themselves before this release: copy what their status holds.
    op.execute(
        "UPDATE devices SET "
        "firmware_version = COALESCE((SELECT reported_firmware FROM device_status"
        " WHERE device_status.device_id = devices.id), firmware_version), "
        "schema_version = (SELECT reported_schema FROM device_status"
        " WHERE device_status.device_id = devices.id)"
    )


def downgrade() -> None:
    # batch: on SQLite Alembic drops the column by copying the table; MariaDB alters it in place.
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("schema_version")
