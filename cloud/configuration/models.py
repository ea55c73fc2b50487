"""Configuration records: one document pair per device, one row per requested change."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


class ChangeState(enum.StrEnum):
    """Where a requested change is."""

    PENDING = "pending"  # accepted by the API, not yet confirmed by the device
    APPLIED = "applied"  # the device reported the desired version with the desired values
    REJECTED = "rejected"  # the device refused it (cmd/result, or reported its old value)
    SUPERSEDED = "superseded"  # a later version overrode it before the device confirmed it
    TIMED_OUT = "timed_out"  # no answer within the worker's timeout


class DeviceConfiguration(Base):
    """A device's desired document (what the cloud wants) and the last one it reported.

    Both are complete documents (docs/device-contract.md 4.4), so the delta is computed, never
    stored: it cannot drift from the two documents it derives from.
    """

    __tablename__ = "device_configuration"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    # 0 with an empty document: nothing managed by the cloud yet.
    # Versions are below 2^53 by contract: past a 32-bit INTEGER on MySQL.
    desired_version: Mapped[int] = mapped_column(BigInteger, default=0)
    desired: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reported_version: Mapped[int | None] = mapped_column(BigInteger)
    reported: Mapped[dict[str, Any] | None]
    reported_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConfigChange(Base):
    """One accepted change of a device's desired document; its id is the correlation id."""

    __tablename__ = "config_changes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    # parameter id -> requested value: one entry for PUT, several for the bulk forms. The
    # column is not called `values`, a reserved word in MySQL.
    values: Mapped[dict[str, Any]] = mapped_column("requested", default=dict)
    desired_version: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[ChangeState] = mapped_column(
        Enum(
            ChangeState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    requested_by: Mapped[str] = mapped_column(String(64))  # Principal.audit_id
    # Why the change ended where it did: the device's reason, "timeout", ...
    reason: Mapped[str | None] = mapped_column(String(256))
    # None until the broker took the desired document: the config worker re-sends those.
    sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
