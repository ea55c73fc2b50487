"""Enrollment: a factory station turns an approved serial into a provisioned device.

One transaction does it all or nothing: the serial's row is locked (two stations enrolling
the same serial queue, and the second is refused as already enrolled), the hardware IDs read
from the board are checked against the batch's expected ones, the device record is created in
the batch's organization (approved by the batch, bound to its hardware IDs) and moved
``manufactured -> provisioned``, the CSR is signed by the platform PKI (CN = the device id =
the serial), a MAC is assigned from the pool (or the chip's own recorded), and the serial's
enrollment record written. Any refusal raises before the caller commits: nothing is written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

import firmware
from cloud.audit.service import record
from cloud.db import utcnow
from cloud.devices.models import TRANSITIONS, Device, LifecycleState
from cloud.devices.models import Protocol as DeviceProtocol
from cloud.identity.principal import Principal
from cloud.manufacturing import EnrollmentError, HardwareMismatchError, macpool
from cloud.manufacturing.batches import device_id_for
from cloud.manufacturing.macs import hardware_id
from cloud.manufacturing.models import BatchSerial, BatchState

ENROLLMENTS = Counter(
    "ampfleet_enrollments",
    "Enrollment requests by outcome: enrolled, or the refusal's reason code.",
    ["outcome"],
)


@dataclasses.dataclass(frozen=True)
class Signed:
    """A certificate the PKI issued for a device's CSR."""

    serial: str
    certificate_pem: str
    chain_pem: str
    not_after: dt.datetime


class CsrSigner(Protocol):
    """The platform PKI as enrollment uses it (``cloud.manufacturing.signing``)."""

    def sign(self, session: Session, device_id: str, csr_pem: str, actor: Principal) -> Signed:
        """Check and sign ``csr_pem`` for ``device_id`` in ``session``; EnrollmentError
        (field ``csr``, the PKI's reason) when the CSR is refused."""
        ...

    def ca_chain(self, session: Session) -> str:
        """The CA certificates (PEM) a device needs to trust the platform's certificates."""
        ...


@dataclasses.dataclass(frozen=True)
class Enrollment:
    """What a station sends: the serial and what it read from and made for the board."""

    serial: str
    csr_pem: str
    chip_id: str
    slave_ids: Sequence[str]
    mac: str | None = None  # the chip's own MAC (esptool read-mac); None: assign from the pool


@dataclasses.dataclass(frozen=True)
class Enrolled:
    """The outcome, for the station to write into the board's NVS and flash."""

    device: Device
    certificate: Signed
    ca_chain_pem: str
    firmware_version: str


def firmware_for(setting: str, family: str) -> str:
    """The stable firmware version to flash on ``family`` (setting ``factory_firmware``:
    ``family=version`` pairs, ``*`` for every family), else this tree's bundle version."""
    versions: dict[str, str] = {}
    for pair in setting.split(","):
        name, sep, version = pair.strip().partition("=")
        if sep and name.strip() and version.strip():
            versions[name.strip()] = version.strip()
    return versions.get(family) or versions.get("*") or firmware.__version__


def _refuse(message: str, field: str, reason: str) -> EnrollmentError:
    return EnrollmentError(message, field, reason)


def _check_hardware(row: BatchSerial, chip: str, slaves: list[str]) -> None:
    problems = []
    if row.expected_chip_id is not None and row.expected_chip_id != chip:
        problems.append(("chip_id", f"master chip {chip}, expected {row.expected_chip_id}"))
    if row.expected_slave_ids is not None and sorted(row.expected_slave_ids) != slaves:
        missing = sorted(set(row.expected_slave_ids) - set(slaves))
        unknown = sorted(set(slaves) - set(row.expected_slave_ids))
        words = []
        if missing:
            words.append("missing " + ", ".join(missing))
        if unknown:
            words.append("not expected " + ", ".join(unknown))
        problems.append(("slave_ids", "slave ids differ from the batch's: " + "; ".join(words)))
    if problems:
        field = problems[0][0]
        raise HardwareMismatchError(
            f"{row.serial}: " + "; ".join(m for _, m in problems) + " (a different board?)",
            field,
        )


def enroll(
    session: Session,
    request: Enrollment,
    actor: Principal,
    signer: CsrSigner,
    may_enroll: Callable[[int], bool],
    firmware_setting: str = "",
) -> Enrolled:
    """Enroll one board (see the module docstring); EnrollmentError (or a subclass, or a
    MacPoolError) naming the field otherwise. ``may_enroll(organization_id)``: whether the
    actor may enroll there (a serial of another organization is reported as unknown)."""
    chip = hardware_id(request.chip_id, "chip_id")
    slaves = sorted(hardware_id(s, "slave_ids") for s in request.slave_ids)
    if len(set(slaves)) != len(slaves):
        raise _refuse("a slave id is listed twice", "slave_ids", "bad_hardware_id")
    # The serial's row only: a joined batch would be locked too (MariaDB locks every row of a
    # FOR UPDATE join), and every enrollment of the batch would queue behind one another.
    row = session.scalar(
        select(BatchSerial)
        .where(BatchSerial.serial == request.serial)
        .options(lazyload(BatchSerial.batch))
        .with_for_update()
    )
    if row is None or not may_enroll(row.batch.organization_id):
        raise _refuse(
            f"{request.serial!r} is not in any production batch", "serial", "unknown_serial"
        )
    batch = row.batch
    if batch.state is not BatchState.APPROVED:
        raise _refuse(
            f"{request.serial}: its batch {batch.id} is not approved yet", "serial", "not_approved"
        )
    if row.enrolled_at is not None:
        raise _refuse(
            f"{request.serial} was enrolled already, as {row.device_id}, at "
            f"{row.enrolled_at.isoformat()}",
            "serial",
            "already_enrolled",
        )
    _check_hardware(row, chip, slaves)
    device_id = device_id_for(row.serial)
    if session.get(Device, device_id) is not None:
        raise _refuse(f"device id {device_id} is taken", "serial", "device_exists")
    own_mac = macpool.own_mac(session, request.mac) if request.mac else None
    now = utcnow()
    device = Device(
        id=device_id,
        serial=row.serial,
        hardware_family=batch.hardware_family,
        protocol=DeviceProtocol.NATIVE,
        state=LifecycleState.MANUFACTURED,
        organization_id=batch.organization_id,
        approved_at=now,
        approved_by=f"batch:{batch.id}",
        chip_id=chip,
        slave_ids=slaves,
    )
    session.add(device)
    session.flush()  # the PKI records the certificate against the device
    certificate = signer.sign(session, device_id, request.csr_pem, actor)
    # Last, so that the pool's row stays locked for the shortest time: until the commit.
    device.mac = own_mac or macpool.allocate(session, batch.organization_id)
    if LifecycleState.PROVISIONED not in TRANSITIONS[device.state]:  # pragma: no cover
        raise _refuse("cannot provision a new device", "serial", "state")
    device.state = LifecycleState.PROVISIONED
    version = firmware_for(firmware_setting, batch.hardware_family)
    row.device_id = device_id
    row.enrolled_at = now
    row.enrolled_by = actor.audit_id
    row.firmware_version = version
    row.certificate_serial = certificate.serial
    session.flush()
    record(
        session,
        actor,
        "device.enroll",
        "device",
        device_id,
        batch.organization_id,
        {
            "batch": batch.id,
            "serial": row.serial,
            "mac": device.mac,
            "mac_source": "chip" if own_mac else "pool",
            "chip_id": chip,
            "slave_ids": slaves,
            "certificate_serial": certificate.serial,
            "firmware": version,
            "state": [LifecycleState.MANUFACTURED.value, LifecycleState.PROVISIONED.value],
        },
    )
    return Enrolled(device, certificate, signer.ca_chain(session), version)
