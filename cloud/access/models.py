"""Access records: RFID cards, e-mailed invitations to own or use a charger, and the version
of each charger's local authorization list."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, enum_column, utcnow
from cloud.identity.grants import AccessLevel


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


class Invitation(Base):
    """An e-mailed invitation to become an owner or a guest of a charger; it expires."""

    __tablename__ = "charger_invitations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part of the token
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))  # lower-case
    level: Mapped[AccessLevel] = mapped_column(enum_column(AccessLevel))
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


class AuthorizationListRequest(Base):
    """A charger whose local authorization list must be recomputed and republished.

    Written by the API in the transaction of the change that calls for it (a card, an access
    row, a user's activity or roles), so that a committed change is never without its request
    and a rolled-back one never has one; the charging worker takes the requests, publishes the
    lists over its one connection and deletes them (``cloud.access.outbox``).
    """

    __tablename__ = "authorization_list_requests"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    # Bumped by every request: the worker deletes only the generation it handled, so a request
    # made while it computed the list is kept for the next pass.
    generation: Mapped[int] = mapped_column(default=1)
    requested_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class GuestCredential(Base):
    """A guest credential the platform signed (``cloud.access.guestpass``): its id is the guest
    id inside it, the id tag the charger reports the session under, so the session finds its
    user even when it was started offline."""

    __tablename__ = "guest_credentials"

    id: Mapped[str] = mapped_column(String(20), primary_key=True)  # gst-xxxxxxxxxxxx
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))  # which platform key signed it
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
