"""Grants on one charger: a user is its owner, or a guest inside a validity window.

These rows widen a principal's scope to single devices (``Principal`` reads them), which is
why they live with identity, not with the charging or access features that create them.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, enum_column, utcnow


class AccessLevel(enum.StrEnum):
    """How a user may use one charger."""

    OWNER = "owner"  # uses it, sees its sessions, invites co-owners and guests
    GUEST = "guest"  # starts and stops sessions on it, inside a validity window


class ChargerAccess(Base):
    """A user's right to use one charger: an owner, or a guest inside a validity window."""

    __tablename__ = "charger_access"
    __table_args__ = (UniqueConstraint("device_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    level: Mapped[AccessLevel] = mapped_column(enum_column(AccessLevel))
    valid_from: Mapped[dt.datetime | None]
    valid_until: Mapped[dt.datetime | None]
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
