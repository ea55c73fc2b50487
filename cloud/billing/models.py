"""Billing records: tariffs.

Money is exact: prices are ``Numeric`` (currency units per kWh, 4 decimals) and costs are whole
cents, so a billing export adds up to the cent with what the database holds.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


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
