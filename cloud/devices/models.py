"""Device and device-group records."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Column, Enum, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, utcnow


class Protocol(enum.StrEnum):
    """How a charger talks to the cloud."""

    NATIVE = "native"
    OCPP = "ocpp"


class LifecycleState(enum.StrEnum):
    """Where a device is in its life, from the factory to the scrap yard."""

    MANUFACTURED = "manufactured"  # on the whitelist, never connected
    PROVISIONED = "provisioned"  # credentials issued, handed to an installer or owner
    RELEASED = "released"  # labels scanned at the end of the line: box and charger bound, sold
    ACTIVE = "active"  # installed and in service
    SUSPENDED = "suspended"  # temporarily refused by the cloud (unpaid, tampered, ...)
    DECOMMISSIONED = "decommissioned"  # gone for good; kept for history


# Allowed moves; DECOMMISSIONED is terminal so that history stays trustworthy.
TRANSITIONS: dict[LifecycleState, frozenset[LifecycleState]] = {
    LifecycleState.MANUFACTURED: frozenset(
        {LifecycleState.PROVISIONED, LifecycleState.DECOMMISSIONED}
    ),
    # provisioned -> released is the end-of-line scan (POST /releases, cloud.pairing); a device
    # that connects before it is released (an end-of-line test) goes straight to active.
    LifecycleState.PROVISIONED: frozenset(
        {
            LifecycleState.RELEASED,
            LifecycleState.ACTIVE,
            LifecycleState.SUSPENDED,
            LifecycleState.DECOMMISSIONED,
        }
    ),
    LifecycleState.RELEASED: frozenset(
        {LifecycleState.ACTIVE, LifecycleState.SUSPENDED, LifecycleState.DECOMMISSIONED}
    ),
    LifecycleState.ACTIVE: frozenset({LifecycleState.SUSPENDED, LifecycleState.DECOMMISSIONED}),
    LifecycleState.SUSPENDED: frozenset({LifecycleState.ACTIVE, LifecycleState.DECOMMISSIONED}),
    LifecycleState.DECOMMISSIONED: frozenset(),
}


device_group_members = Table(
    "device_group_members",
    Base.metadata,
    Column("group_id", ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("device_id", ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
)


class Device(Base):
    """A charger. Its id is also its MQTT client id, username and certificate CN."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    # Normalised AA:BB:CC:DD:EE:FF; unique because MACs are assigned from our own block.
    mac: Mapped[str | None] = mapped_column(String(17), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    hardware_family: Mapped[str] = mapped_column(String(64), index=True)
    # What the device last announced in its status (contract 4.2 ``fw`` and ``schema``), kept on
    # the record so that the registry answers "which chargers run 1.0.0" without the status.
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    schema_version: Mapped[str | None] = mapped_column(String(64))
    protocol: Mapped[Protocol] = mapped_column(
        Enum(Protocol, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    state: Mapped[LifecycleState] = mapped_column(
        Enum(
            LifecycleState,
            native_enum=False,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        index=True,
    )
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="SET NULL"), index=True
    )
    # Set while the device is quarantined (cloud.devices.quarantine): it may connect and publish
    # its status, nothing else, until an admin approves it. Why, in words an operator reads.
    quarantine_reason: Mapped[str | None] = mapped_column(String(200))
    quarantined_at: Mapped[dt.datetime | None]
    # Approved to be in service: enrolled from an approved production batch, registered by an
    # admin where that counts as approval (setting ``device_approval``), or approved by hand
    # out of quarantine. A device that connects unapproved is quarantined (status worker).
    # ``approved_by`` as the audit log names the approver (``user:5``, ``batch:3``).
    approved_at: Mapped[dt.datetime | None]
    approved_by: Mapped[str | None] = mapped_column(String(64))
    # The hardware bound into the device's identity at enrollment (lowercase hex, as the board
    # reports them, contract 4.2 ``hw``): the master's chip id and the slaves' unique ids. The
    # board reports them at every boot; a difference quarantines it (a swapped board). Null:
    # not enrolled, nothing to compare.
    chip_id: Mapped[str | None] = mapped_column(String(32))
    slave_ids: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    groups: Mapped[list[DeviceGroup]] = relationship(
        secondary=device_group_members, back_populates="devices", lazy="selectin"
    )


class DeviceGroup(Base):
    """A named set of devices in one organization: a fleet, a rollout wave, a customer's lot."""

    __tablename__ = "device_groups"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    devices: Mapped[list[Device]] = relationship(
        secondary=device_group_members, back_populates="groups", lazy="raise"
    )


class DeviceStatus(Base):
    """Whether a device is connected, as its retained status message (or last will) says."""

    __tablename__ = "device_status"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    online: Mapped[bool] = mapped_column(default=False, index=True)
    # When the state last changed, and when the cloud last heard a status from the device.
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reported_firmware: Mapped[str | None] = mapped_column(String(64))
    # The parameter schema the firmware says it implements (contract 4.2 ``schema``, e.g.
    # ``ac22-3p.3``); null until the device announces one.
    reported_schema: Mapped[str | None] = mapped_column(String(64))
    # The hardware IDs the device last announced (contract 4.2 ``hw``: ``{"chip": ...,
    # "slaves": {node: id}}``); an approval out of a hardware quarantine adopts them.
    reported_hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON)
