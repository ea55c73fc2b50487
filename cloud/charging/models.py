"""Charging records: sessions, built from the chargers' events and priced from their energy.

Costs are whole cents, so a billing export adds up to the cent with what the database holds.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, enum_column, utcnow


class SessionSource(enum.StrEnum):
    """What started a session."""

    APP = "app"  # the app's button: a charging.start command from the API
    RFID = "rfid"  # a card on the charger's local authorization list
    GUEST = "guest"  # an invited guest, from the app
    FREE = "free"  # no authorization required (``rfid_required`` off): plug and charge


class SessionState(enum.StrEnum):
    """Where a session is."""

    REQUESTED = "requested"  # the API sent charging.start; the charger has not started yet
    ACTIVE = "active"  # charging.started received, no stop yet
    COMPLETED = "completed"  # charging.stopped received: energy, cost and reason are final
    FAILED = "failed"  # the start command was refused or never answered
    REFUSED = "refused"  # a card the charger or the cloud refused: an attempt, never billed


class ChargingSession(Base):
    """One charging session: requested from the app or started at the charger, metered while it
    runs, stopped with a reason, priced from its energy per tariff window."""

    __tablename__ = "charging_sessions"
    # The charger's own id for the session (native session id, OCPP transaction id) makes the
    # record idempotent: a session reported again after an offline period is the same row.
    __table_args__ = (UniqueConstraint("device_id", "charger_session_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # RESTRICT: billing history outlives nothing silently; retire a device instead.
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="RESTRICT"), index=True
    )
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="SET NULL"), index=True
    )
    charger_session_id: Mapped[str | None] = mapped_column(String(64))
    connector: Mapped[int] = mapped_column(default=1)
    source: Mapped[SessionSource] = mapped_column(enum_column(SessionSource))
    state: Mapped[SessionState] = mapped_column(enum_column(SessionState), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    card_id: Mapped[int | None] = mapped_column(
        ForeignKey("rfid_cards.id", ondelete="SET NULL"), index=True
    )
    id_tag: Mapped[str | None] = mapped_column(String(64))
    # The charging.start command of an app or guest start (its id is the correlation id).
    command_id: Mapped[str | None] = mapped_column(String(64), index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    stopped_at: Mapped[dt.datetime | None]
    meter_start_wh: Mapped[float | None]
    meter_stop_wh: Mapped[float | None]
    energy_wh: Mapped[float] = mapped_column(default=0.0)
    power_w: Mapped[float | None]  # the latest power while it runs
    duration_s: Mapped[int | None]
    # remote, local, ev_disconnected, schedule_end, fault, power_loss, card_refused, other.
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    # The reason as the charger said it (an OCPP stoppedReason, a native reason).
    charger_reason: Mapped[str | None] = mapped_column(String(64))
    stop_requested_by: Mapped[str | None] = mapped_column(String(64))  # Principal.audit_id
    stop_requested_at: Mapped[dt.datetime | None]
    tariff_id: Mapped[int | None] = mapped_column(ForeignKey("tariffs.id", ondelete="SET NULL"))
    currency: Mapped[str | None] = mapped_column(String(3))
    cost_cents: Mapped[int | None]
    # Reported after the charger came back online (its events were held while offline).
    reconciled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
