"""device credentials

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import cloud.db

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per device; only the argon2id hash of the MQTT password is stored.
    op.create_table('device_credentials',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('secret_hash', sa.String(length=256), nullable=False),
    sa.Column('created_at', cloud.db.UTCDateTime(), nullable=False),
    sa.Column('rotated_at', cloud.db.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', cloud.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_credentials_device_id_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_credentials'))
    )


def downgrade() -> None:
    # The table only: its primary key is its only index, and it goes with the table.
    op.drop_table('device_credentials')
