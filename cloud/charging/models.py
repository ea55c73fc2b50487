"""Charging records: sessions, RFID cards, tariffs, who may use a charger (owners and guests),
invitations, and the versioned local authorization list each charger holds.

Money is exact: prices are ``Numeric`` (currency units per kWh, 4 decimals) and costs are whole
cents, so a billing export adds up to the cent with what the database holds.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


def _enum(kind: type[enum.Enum]) -> Enum:
    return Enum(kind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


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


class AccessLevel(enum.StrEnum):
    """How a user may use one charger."""

    OWNER = "owner"  # uses it, sees its sessions, invites co-owners and guests
    GUEST = "guest"  # starts and stops sessions on it, inside a validity window


class RfidCard(Base):
    """An RFID card (an OCPP idToken) registered to a user of the organization."""

    __tablename__ = "rfid_cards"
    # A card is presented to chargers of one organization: its uid names it there.
    __table_args__ = (UniqueConstraint("organization_id", "uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    # Upper-case hex of the ISO 14443 UID (or the OCPP idToken as the charger sends it).
    uid: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Tariff(Base):
    """A price per kWh for one charger, one site, or (neither set) the whole organization; the
    most specific one applies. ``windows`` are time-of-day prices in the site's local time
    (a night tariff): ``[{"start": "22:00", "end": "06:00", "price_per_kwh": "0.1800"}]``;
    energy outside every window costs ``price_per_kwh``."""

    __tablename__ = "tariffs"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[str | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")  # ISO 4217
    price_per_kwh: Mapped[Decimal] = mapped_column(Numeric(10, 4))
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    source: Mapped[SessionSource] = mapped_column(_enum(SessionSource))
    state: Mapped[SessionState] = mapped_column(_enum(SessionState), index=True)
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


class ChargerAccess(Base):
    """A user's right to use one charger: an owner, or a guest inside a validity window."""

    __tablename__ = "charger_access"
    __table_args__ = (UniqueConstraint("device_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    level: Mapped[AccessLevel] = mapped_column(_enum(AccessLevel))
    valid_from: Mapped[dt.datetime | None]
    valid_until: Mapped[dt.datetime | None]
    granted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Invitation(Base):
    """An e-mailed invitation to become an owner or a guest of a charger; it expires."""

    __tablename__ = "charger_invitations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part of the token
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))  # lower-case
    level: Mapped[AccessLevel] = mapped_column(_enum(AccessLevel))
    # The access the invitee gets (a guest's window); the invitation's own deadline is below.
    valid_from: Mapped[dt.datetime | None]
    valid_until: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime]
    secret_hash: Mapped[str] = mapped_column(String(256))  # KDF hash of the secret part
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    accepted_at: Mapped[dt.datetime | None]
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuthorizationList(Base):
    """The version of each charger's local authorization list (the cards it may accept while
    offline), bumped whenever its content changes and published retained (contract 4.9)."""

    __tablename__ = "authorization_lists"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(default=0)
    # sha256 of the canonical list: a recomputation that changes nothing bumps nothing.
    digest: Mapped[str] = mapped_column(String(64), default="")
    published_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
