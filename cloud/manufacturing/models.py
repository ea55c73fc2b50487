"""Production batches, their serials (the factory whitelist and the enrollment record) and MAC
pools."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, enum_column, utcnow
from cloud.manufacturing.macs import format_mac


class BatchState(enum.StrEnum):
    """A batch is created pending; a second admin approves it."""

    PENDING = "pending"
    APPROVED = "approved"


class ProductionBatch(Base):
    """A production run: which serials of which family an organization may enroll."""

    __tablename__ = "production_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    hardware_family: Mapped[str] = mapped_column(String(64))
    count: Mapped[int]
    note: Mapped[str] = mapped_column(String(1000), default="")
    state: Mapped[BatchState] = mapped_column(enum_column(BatchState), index=True)
    # Who created and who approved, as the audit log names them (``user:5``): four eyes means
    # two different names here (cloud.manufacturing.batches.approve).
    created_by: Mapped[str] = mapped_column(String(64))
    created_by_name: Mapped[str] = mapped_column(String(200))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_by_name: Mapped[str | None] = mapped_column(String(200))
    approved_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    serials: Mapped[list[BatchSerial]] = relationship(
        back_populates="batch", lazy="raise", order_by="BatchSerial.position"
    )


class BatchSerial(Base):
    """One serial of a batch: on the whitelist until enrolled, then its enrollment record.

    The serial is the primary key: a serial exists in one batch only, whatever two admins
    create at the same moment.
    """

    __tablename__ = "batch_serials"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[int] = mapped_column(
        ForeignKey("production_batches.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    # Lowercase hex, as the board reports them (contract 4.2 ``hw``); null: not known in advance.
    expected_chip_id: Mapped[str | None] = mapped_column(String(32))
    expected_slave_ids: Mapped[list[str] | None] = mapped_column(JSON)
    # The enrollment record. No foreign key to the device on purpose: a deleted device must
    # not make its serial enrollable again (enrolled_at stays).
    device_id: Mapped[str | None] = mapped_column(String(64))
    enrolled_at: Mapped[dt.datetime | None]
    enrolled_by: Mapped[str | None] = mapped_column(String(64))
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    certificate_serial: Mapped[str | None] = mapped_column(String(64))

    batch: Mapped[ProductionBatch] = relationship(back_populates="serials", lazy="joined")


class MacPool(Base):
    """A block of MAC addresses (from the manufacturer's OUI) handed out at enrollment.

    Addresses are 48-bit integers; ``next`` is the allocation counter, moved by one atomic
    UPDATE per enrollment (cloud.manufacturing.macpool.allocate), so that two stations never
    get the same address.
    """

    __tablename__ = "mac_pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    first: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[int] = mapped_column(BigInteger)
    next: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def as_dict(self) -> dict[str, Any]:
        """What the audit log records of a pool."""
        return {"name": self.name, "first": format_mac(self.first), "last": format_mac(self.last)}
