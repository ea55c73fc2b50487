"""Pairing records: each charger's two codes, and the wrong box codes that lead to a lockout."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


class ChargerCodes(Base):
    """A charger's two codes: the charger code in clear (it is printed on the charger and looked
    up by it), the box code as its KDF hash only (a copy of the database pairs nothing)."""

    __tablename__ = "device_codes"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    # Normalised (no dashes, upper case): the lookup key of a scan, so one hash is checked.
    charger_code: Mapped[str] = mapped_column(String(16), unique=True)
    box_code_hash: Mapped[str] = mapped_column(String(256))
    # 1 for the first label, +1 per reprint: a reprint issues a new box code, the old one is void.
    generation: Mapped[int] = mapped_column(default=1)
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    issued_by: Mapped[str] = mapped_column(String(64), default="")  # audit id of the actor
    # End of the line: both labels scanned, box and charger bound (generation of the box code).
    released_at: Mapped[dt.datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(64))
    released_generation: Mapped[int | None]
    # Single use: set when the box code paired the charger; cleared by the charger's factory
    # reset (physical possession again) and by a reprint (a new box code).
    box_code_used_at: Mapped[dt.datetime | None]
    box_code_used_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PairingFailure(Base):
    """One wrong box code (or unknown charger code), counted against the charger and the user.

    Append-only, so that concurrent failures never race on a counter; a success deletes the
    charger's and the user's rows, and rows older than two lockout periods are pruned.
    """

    __tablename__ = "pairing_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Null for an unknown charger code: it counts against the user only.
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    failed_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
