"""What the bridge keeps about an OCPP charger besides its device record."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow


class OcppCharger(Base):
    """An OCPP charger's identity as its last BootNotification gave it, and its switches."""

    __tablename__ = "ocpp_chargers"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    # Known vendor deviations exist (a float where the schema wants an integer, an extra
    # field): with ``lenient`` set, the bridge skips the JSON-schema check of what this
    # charger sends, and still refuses what it cannot translate.
    lenient: Mapped[bool] = mapped_column(default=False)
    # "1.6" or "2.0.1": the subprotocol of the charger's last connection.
    ocpp_version: Mapped[str | None] = mapped_column(String(8))
    # BootNotification (1.6 4.2 / 2.0.1 B01): CiString50/20/25/50 in the specs.
    vendor: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(64))
    serial_number: Mapped[str | None] = mapped_column(String(64))
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    last_boot_at: Mapped[dt.datetime | None]
    # The bridge instance (its MQTT client id) that announced the charger online last: when
    # that bridge dies, its will makes the status worker mark its chargers offline
    # (``cloud.ocpp.bridges``). Left as it is when the charger goes: a later will of that
    # bridge finds it offline already, or held by another bridge.
    bridge_id: Mapped[str | None] = mapped_column(String(64), index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
