"""MAC pools: blocks of the manufacturer's addresses, handed out one per enrollment.

Allocation is one atomic ``UPDATE mac_pools SET next = next + 1 WHERE id = ? AND next <= last``
in the enrollment's transaction: on MariaDB the row stays locked until that transaction ends,
so concurrent enrollments queue on it and each reads back its own counter (no duplicate, no
gap unless an enrollment is rolled back, and then its address is not used either: the counter
rolls back with it). On SQLite the UPDATE takes the database's write lock: the same guarantee.
"""

from __future__ import annotations

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.devices.models import Device
from cloud.identity.principal import Principal
from cloud.manufacturing import MacPoolError, MacPoolExhaustedError, MacTakenError
from cloud.manufacturing.macs import check_unicast, format_mac, parse_mac, parse_range
from cloud.manufacturing.models import MacPool

# Addresses skipped because a device already holds them (registered by hand inside a pool)
# before an allocation gives up: a pool is not meant to be shared with hand registrations.
_SKIP_TAKEN = 64


def create(
    session: Session,
    organization_id: int,
    name: str,
    first: str,
    last: str | None,
    size: int | None,
    actor: Principal,
) -> MacPool:
    """Define a pool (audited ``mac_pool.create``); MacPoolError naming the field when the
    range is malformed or overlaps any pool of any organization (a MAC is global)."""
    start, end = parse_range(first, last, size)
    clash = session.scalar(
        select(MacPool).where(and_(MacPool.first <= end, MacPool.last >= start)).limit(1)
    )
    if clash is not None:
        raise MacPoolError(
            f"overlaps pool {clash.id} ({format_mac(clash.first)}..{format_mac(clash.last)})",
            "first",
            "mac_pool_overlap",
        )
    pool = MacPool(
        organization_id=organization_id,
        name=name,
        first=start,
        last=end,
        next=start,
        created_by=actor.audit_id,
    )
    session.add(pool)
    session.flush()
    record(session, actor, "mac_pool.create", "mac_pool", pool.id, organization_id, pool.as_dict())
    return pool


def allocate(session: Session, organization_id: int) -> str:
    """The next free address of the organization's pools (oldest pool first), taken for good
    when the transaction commits; MacPoolExhaustedError when none is left."""
    skipped = 0
    candidates = session.scalars(
        select(MacPool.id)
        .where(MacPool.organization_id == organization_id, MacPool.next <= MacPool.last)
        .order_by(MacPool.id)
    ).all()
    for pool_id in candidates:
        while True:
            moved = session.execute(
                update(MacPool)
                .where(MacPool.id == pool_id, MacPool.next <= MacPool.last)
                .values(next=MacPool.next + 1)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                break  # this pool ran out meanwhile: the next one
            value = int(session.scalar(select(MacPool.next).where(MacPool.id == pool_id)) or 0) - 1
            mac = format_mac(value)
            if session.scalar(select(Device.id).where(Device.mac == mac)) is None:
                return mac
            skipped += 1
            if skipped > _SKIP_TAKEN:
                break
    raise MacPoolExhaustedError(
        "no free MAC address left in this organization's pools: define another "
        "(POST /api/v1/mac-pools)",
        "mac",
    )


def own_mac(session: Session, text: str) -> str:
    """The chip's own MAC (read by esptool), normalised; MacPoolError when malformed or not
    unicast, MacTakenError when a device has it or a pool could hand it out."""
    value = parse_mac(text, "mac")
    check_unicast(value, "mac")
    mac = format_mac(value)
    if session.scalar(select(Device.id).where(Device.mac == mac)) is not None:
        raise MacTakenError(f"{mac} is already a device's MAC", "mac")
    pool = session.scalar(
        select(MacPool).where(MacPool.first <= value, MacPool.last >= value).limit(1)
    )
    if pool is not None:
        raise MacTakenError(f"{mac} lies inside MAC pool {pool.id}: it would be given twice", "mac")
    return mac


def free(pool: MacPool) -> int:
    """Addresses the pool has left."""
    return max(0, pool.last - pool.next + 1)
