"""Command records: one row per command sent to a device; its id is the correlation id."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


class CommandState(enum.StrEnum):
    """Where a command is."""

    PENDING = "pending"  # recorded, no answer yet (sent_at says whether the broker has it)
    ACCEPTED = "accepted"  # the device started it; a final answer follows (contract 4.6)
    SUCCEEDED = "succeeded"  # the device answered ok
    REJECTED = "rejected"  # the device did not run it (expired, unknown, bad args...)
    ERROR = "error"  # the device ran it and it failed
    TIMED_OUT = "timed_out"  # no final answer before the command expired


FINAL_STATES = frozenset(
    {CommandState.SUCCEEDED, CommandState.REJECTED, CommandState.ERROR, CommandState.TIMED_OUT}
)


class DeviceCommand(Base):
    """One command sent (or to be sent) to a device."""

    __tablename__ = "device_commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[CommandState] = mapped_column(
        Enum(
            CommandState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    # The device's ``result`` object (contract 4.6), from its last answer.
    result: Mapped[dict[str, Any] | None]
    # The device's reason ("expired", "unknown_command", ...) or the worker's ("timeout").
    reason: Mapped[str | None] = mapped_column(String(256))
    requested_by: Mapped[str] = mapped_column(String(64))  # Principal.audit_id
    # Cloud time after which the device must not run it (the command's ``expires``) and after
    # which the worker times it out.
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    # None until the broker took the command: the worker re-sends those until they expire.
    sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
