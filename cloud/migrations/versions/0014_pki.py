"""platform PKI: sealed keys, authorities, device certificates, CRLs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import cloud.db

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Private keys sealed with the key-encryption key (AES-256-GCM): never in the clear here.
    op.create_table(
        "pki_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", cloud.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pki_keys")),
    )
    op.create_table(
        "pki_authorities",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("not_before", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("not_after", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", cloud.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_name"], ["pki_keys.name"], name=op.f("fk_pki_authorities_key_name_pki_keys")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pki_authorities")),
    )
    # No foreign key to devices: a revoked certificate stays on the CRL after its device goes.
    op.create_table(
        "device_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("authority", sa.String(length=32), nullable=False),
        sa.Column("not_before", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("not_after", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("public_key_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum("issued", "revoked", name="certificatestate", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("issued_at", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", cloud.db.UTCDateTime(), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_device_certificates_fingerprint")),
        sa.UniqueConstraint("serial", name=op.f("uq_device_certificates_serial")),
    )
    op.create_index(
        "ix_device_certificates_device_id_not_after",
        "device_certificates",
        ["device_id", "not_after"],
    )
    op.create_index(
        op.f("ix_device_certificates_not_after"), "device_certificates", ["not_after"]
    )
    op.create_index(op.f("ix_device_certificates_state"), "device_certificates", ["state"])
    op.create_table(
        "pki_crls",
        sa.Column("authority", sa.String(length=32), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("this_update", cloud.db.UTCDateTime(), nullable=False),
        sa.Column("next_update", cloud.db.UTCDateTime(), nullable=False),
        sa.Column(
            "crl_der",
            sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["authority"],
            ["pki_authorities.name"],
            name=op.f("fk_pki_crls_authority_pki_authorities"),
        ),
        sa.PrimaryKeyConstraint("authority", name=op.f("pk_pki_crls")),
    )


def downgrade() -> None:
    op.drop_table("pki_crls")
    op.drop_index(op.f("ix_device_certificates_state"), table_name="device_certificates")
    op.drop_index(op.f("ix_device_certificates_not_after"), table_name="device_certificates")
    op.drop_index("ix_device_certificates_device_id_not_after", table_name="device_certificates")
    op.drop_table("device_certificates")
    op.drop_table("pki_authorities")
    op.drop_table("pki_keys")
