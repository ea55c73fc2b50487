"""Production batches: created by one admin, approved by another; the factory whitelist.

A batch names an organization, a hardware family and its serials (a zero-padded range or an
explicit list), with the MCU hardware IDs expected per serial when the line knows them in
advance. A serial is in one batch only, and never one of a registered device. Both the creation
and the approval are audited; the approver must be someone else than the creator (four eyes).

The device id of an enrolled serial is the serial itself (:func:`device_id_for`): the station
knows it before it builds the CSR, whose CN must equal it (the device id is also the MQTT client
id, username and certificate CN), so serials are restricted to what a device id may hold.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.principal import Principal
from cloud.manufacturing import BatchError, SameApproverError, SerialTakenError, StateError
from cloud.manufacturing.macs import hardware_id
from cloud.manufacturing.models import BatchSerial, BatchState, ProductionBatch
from parameters import known_families

#: Most serials in one batch: one request body, one transaction.
MAX_BATCH = 10_000
# A serial becomes the device id: the MQTT client id, topic root and certificate CN.
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK = 500  # serials per IN (...) query


def device_id_for(serial: str) -> str:
    """The device id an enrolled serial gets: the serial itself (the CSR's CN)."""
    return serial


@dataclasses.dataclass(frozen=True)
class SerialRange:
    """``prefix`` + first..last, each number zero-padded to ``digits``: AC22-000001."""

    prefix: str
    first: int
    last: int
    digits: int = 6

    def serials(self) -> list[str]:
        """Every serial of the range, in order."""
        if self.first < 0 or self.last < self.first:
            raise BatchError("last must be at least first (both >= 0)", "serial_range.last")
        if self.last - self.first + 1 > MAX_BATCH:
            raise BatchError(f"at most {MAX_BATCH} serials per batch", "serial_range.last")
        if len(str(self.last)) > self.digits:
            raise BatchError(
                f"{self.last} has more than {self.digits} digits", "serial_range.digits"
            )
        return [f"{self.prefix}{n:0{self.digits}d}" for n in range(self.first, self.last + 1)]


@dataclasses.dataclass(frozen=True)
class Expected:
    """The hardware IDs the line expects on one serial's board (lowercase hex)."""

    serial: str
    chip_id: str | None = None
    slave_ids: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class NewBatch:
    """What an admin asks for: exactly one of ``serials`` and ``serial_range``."""

    organization_id: int
    hardware_family: str
    count: int
    serials: Sequence[str] | None = None
    serial_range: SerialRange | None = None
    expected: Sequence[Expected] = ()
    note: str = ""


def _serials(request: NewBatch) -> list[str]:
    if (request.serials is None) == (request.serial_range is None):
        raise BatchError("give either serials or serial_range", "serials")
    if request.serial_range is not None:
        serials = request.serial_range.serials()
        field = "serial_range"
    else:
        serials = list(request.serials or ())
        field = "serials"
        if len(serials) > MAX_BATCH:
            raise BatchError(f"at most {MAX_BATCH} serials per batch", field)
    for serial in serials:
        if not _SERIAL.match(serial):
            raise BatchError(
                f"{serial!r}: a serial becomes the device id: letters, digits, '-', '_' and "
                "'.', starting with a letter or digit, at most 64",
                field,
            )
    twice = sorted(serial for serial, n in Counter(serials).items() if n > 1)
    if twice:
        raise BatchError(f"serials listed twice: {', '.join(twice[:5])}", field)
    if len(serials) != request.count:
        raise BatchError(f"count is {request.count} but {len(serials)} serials were given", "count")
    return serials


def _taken(session: Session, serials: Sequence[str]) -> list[str]:
    """Serials already in a batch or registered as a device (serial or device id)."""
    found: set[str] = set()
    for start in range(0, len(serials), _CHUNK):
        chunk = serials[start : start + _CHUNK]
        found.update(
            session.scalars(select(BatchSerial.serial).where(BatchSerial.serial.in_(chunk)))
        )
        found.update(session.scalars(select(Device.serial).where(Device.serial.in_(chunk))))
        found.update(session.scalars(select(Device.id).where(Device.id.in_(chunk))))
    return sorted(found)


def _expected(request: NewBatch, serials: Iterable[str]) -> dict[str, Expected]:
    members = set(serials)
    by_serial: dict[str, Expected] = {}
    for index, item in enumerate(request.expected):
        field = f"expected.{index}"
        if item.serial not in members:
            raise BatchError(f"{item.serial!r} is not a serial of this batch", field + ".serial")
        if item.serial in by_serial:
            raise BatchError(f"{item.serial!r} is listed twice", field + ".serial")
        chip = hardware_id(item.chip_id, field + ".chip_id") if item.chip_id else None
        slaves = None
        if item.slave_ids is not None:
            slaves = tuple(sorted(hardware_id(s, f"{field}.slave_ids") for s in item.slave_ids))
            if len(set(slaves)) != len(slaves):
                raise BatchError("a slave id is listed twice", field + ".slave_ids")
        by_serial[item.serial] = Expected(item.serial, chip, slaves)
    return by_serial


def create(session: Session, request: NewBatch, actor: Principal) -> ProductionBatch:
    """Create a pending batch and its serials (audited ``batch.create``); BatchError (naming
    the field) when the request does not hold together, SerialTakenError for a serial that is
    already another batch's or a device's."""
    families = known_families()
    if request.hardware_family not in families:
        raise BatchError(
            f"unknown hardware family {request.hardware_family!r}; known: {', '.join(families)}",
            "hardware_family",
        )
    serials = _serials(request)
    taken = _taken(session, serials)
    if taken:
        more = f" and {len(taken) - 5} more" if len(taken) > 5 else ""
        raise SerialTakenError(
            f"already in a batch or registered: {', '.join(taken[:5])}{more}",
            "serial_range" if request.serial_range is not None else "serials",
        )
    expected = _expected(request, serials)
    batch = ProductionBatch(
        organization_id=request.organization_id,
        hardware_family=request.hardware_family,
        count=len(serials),
        note=request.note,
        state=BatchState.PENDING,
        created_by=actor.audit_id,
        created_by_name=actor.name,
    )
    session.add(batch)
    session.flush()
    rows = []
    for position, serial in enumerate(serials):
        known = expected.get(serial)
        rows.append(
            BatchSerial(
                serial=serial,
                batch_id=batch.id,
                position=position,
                expected_chip_id=known.chip_id if known else None,
                expected_slave_ids=list(known.slave_ids)
                if known and known.slave_ids is not None
                else None,
            )
        )
    session.add_all(rows)
    record(
        session,
        actor,
        "batch.create",
        "production_batch",
        batch.id,
        batch.organization_id,
        {
            "hardware_family": batch.hardware_family,
            "count": batch.count,
            "first": serials[0] if serials else None,
            "last": serials[-1] if serials else None,
            "expected_hardware": len(expected),
        },
    )
    return batch


def approve(session: Session, batch: ProductionBatch, actor: Principal) -> ProductionBatch:
    """Approve a pending batch: its serials may enroll from now on (audited
    ``batch.approve``). SameApproverError when ``actor`` created it, StateError when it
    is approved already."""
    if batch.state is BatchState.APPROVED:
        raise StateError(
            f"batch {batch.id} was approved already, by {batch.approved_by_name}", "state"
        )
    if actor.audit_id == batch.created_by:
        raise SameApproverError(
            f"batch {batch.id} was created by {batch.created_by_name}: another admin must "
            "approve it (four eyes)",
            "approved_by",
        )
    batch.state = BatchState.APPROVED
    batch.approved_by = actor.audit_id
    batch.approved_by_name = actor.name
    batch.approved_at = utcnow()
    record(
        session,
        actor,
        "batch.approve",
        "production_batch",
        batch.id,
        batch.organization_id,
        {"created_by": batch.created_by, "count": batch.count},
    )
    return batch
