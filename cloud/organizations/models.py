"""Organization and site records."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow

PLATFORM_SLUG = "platform"


class Organization(Base):
    """A tenant: a manufacturer, an operator or a customer. Data never crosses tenants."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The slug is the stable, URL-safe handle (used in topics and exports); the name can change.
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Site(Base):
    """A place with chargers: a car park, a depot, a home."""

    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500), default="")
    # IANA zone: tariffs and night-charging windows are local times of the site.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
