"""Issuing codes, releasing chargers at the end of the line, pairing them to their owners.

Every change is audited in the caller's transaction. Refusals raise a ``PairingError`` (see the
package docstring); where a refusal must still leave a trace (a pairing attempt that failed, and
the failure counted towards a lockout), the function has added exactly that trace to the session
before raising, and nothing else: the caller commits it and answers the refusal.

Owners and guests are the ``ChargerAccess`` rows of ``cloud.access``: pairing grants the owner
level the way an accepted invitation does, so the paired user reaches that one charger with the
``owner`` system role's permissions, whatever organization their account is in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloud.access import outbox
from cloud.access import owners as access
from cloud.access.models import Invitation
from cloud.audit.service import record
from cloud.db import utcnow
from cloud.devices.models import Device, LifecycleState
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import User
from cloud.identity.passwords import SecretHasher
from cloud.identity.principal import Principal
from cloud.pairing import (
    LockedOutError,
    PairingConflictError,
    PairingError,
    UnknownCodeError,
    WrongBoxCodeError,
)
from cloud.pairing import codes as codec
from cloud.pairing.models import ChargerCodes, PairingFailure

#: Wrong box codes per charger, and per user, before a lockout (issue 14: five).
MAX_FAILURES = 5
#: Lifecycle states in which codes may be issued (enrollment, then the label printer).
ISSUABLE = frozenset({LifecycleState.MANUFACTURED, LifecycleState.PROVISIONED})
#: States in which a charger may be paired: released to market, or already in service.
PAIRABLE = frozenset({LifecycleState.RELEASED, LifecycleState.ACTIVE})
#: The device event (contract 4.3 ``type``) a charger publishes after a factory reset.
FACTORY_RESET_EVENT = "factory_reset"
_UNIQUE_TRIES = 8  # charger codes drawn before giving up on a unique one (55 bits: never)


@dataclasses.dataclass(frozen=True)
class DeviceCodes:
    """A charger's codes as issued: the box code in clear exists only here, returned once."""

    device_id: str
    serial: str
    charger_code: str  # grouped, as printed
    box_code: str  # grouped, as printed
    generation: int  # 1 for the first label, +1 per reprint


@dataclasses.dataclass(frozen=True)
class Paired:
    """What a successful pairing did."""

    device: Device
    access: ChargerAccess
    at: dt.datetime  # when the box code paired it


def _actor_id(actor: Principal | None) -> str:
    return actor.audit_id if actor is not None else "system"


def _codes_of(session: Session, device_id: str) -> ChargerCodes | None:
    return session.get(ChargerCodes, device_id)


def _fresh_charger_code(session: Session) -> str:
    for _ in range(_UNIQUE_TRIES):
        code = codec.new_charger_code()
        if session.scalar(select(ChargerCodes.device_id).where(ChargerCodes.charger_code == code)):
            continue
        return code
    raise PairingError("exhausted", "no unique charger code could be drawn")  # pragma: no cover


def issue_codes(
    session: Session,
    device_ids: Sequence[str],
    *,
    actor: Principal | None,
    hasher: SecretHasher,
) -> list[DeviceCodes]:
    """Issue each device's charger code (once, it never changes) and a new box code.

    A device that already has codes is a reprint: its box code is replaced, so the old box
    label pairs nothing any more, and the single use starts again. Audited per device
    (``device.codes_issue`` / ``device.codes_reprint``, never the box code). Devices must
    exist and be manufactured or provisioned; PairingError naming ``device_ids`` otherwise.
    """
    wanted = list(dict.fromkeys(device_ids))
    found = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(wanted)))}
    missing = [d for d in wanted if d not in found]
    if missing:
        raise PairingError("unknown_device", f"no such devices: {', '.join(missing)}", "device_ids")
    wrong = [d for d in wanted if found[d].state not in ISSUABLE]
    if wrong:
        states = ", ".join(f"{d} is {found[d].state.value}" for d in wrong)
        raise PairingConflictError(
            "state",
            f"codes are issued to manufactured or provisioned devices only: {states}",
            "device_ids",
        )
    now = utcnow()
    issued: list[DeviceCodes] = []
    for device_id in wanted:
        device = found[device_id]
        box = codec.new_box_code()
        row = _codes_of(session, device_id)
        if row is None:
            row = ChargerCodes(
                device_id=device_id,
                charger_code=_fresh_charger_code(session),
                box_code_hash=hasher.hash(box),
                generation=1,
                issued_at=now,
                issued_by=_actor_id(actor),
            )
            session.add(row)
            action = "device.codes_issue"
        else:
            row.box_code_hash = hasher.hash(box)
            row.generation += 1
            row.issued_at, row.issued_by = now, _actor_id(actor)
            # The new box code is unused, and the release bound the old one: bind again.
            row.box_code_used_at = row.box_code_used_by = None
            row.released_at = row.released_by = row.released_generation = None
            action = "device.codes_reprint"
        session.flush()
        record(
            session,
            actor,
            action,
            "device",
            device_id,
            device.organization_id,
            {"charger_code": codec.grouped(row.charger_code), "generation": row.generation},
        )
        issued.append(
            DeviceCodes(
                device_id,
                device.serial,
                codec.grouped(row.charger_code),
                codec.grouped(box),
                row.generation,
            )
        )
    return issued


def _find(session: Session, charger_code: str) -> tuple[ChargerCodes, Device] | None:
    # The row lock: two scans of one charger at once are decided one after the other.
    row = session.scalar(
        select(ChargerCodes).where(ChargerCodes.charger_code == charger_code).with_for_update()
    )
    if row is None:
        return None
    device = session.get(Device, row.device_id)
    assert device is not None  # the codes go with their device (ON DELETE CASCADE)
    return row, device


def release(
    session: Session,
    charger_code: str,
    box_code: str,
    *,
    actor: Principal,
    hasher: SecretHasher,
    permission: str = "manufacturing:release",
) -> Device:
    """The two scans at the end of the line: bind the box to the charger and move the device
    ``provisioned -> released`` (audited ``device.release``).

    Refused with nothing written: a code with a typo (CodeFormatError), a charger code unknown
    or of a device where no role of the actor gives ``permission`` (UnknownCodeError), a box code
    that is not this charger's (WrongBoxCodeError), a device already released or not
    provisioned (PairingConflictError).
    """
    charger = codec.parse_charger_code(charger_code)
    box = codec.parse_box_code(box_code)
    found = _find(session, charger)
    if found is None or not access.role_covers(actor, permission, found[1]):
        hasher.verify(None, box)  # the same time as a wrong box code
        raise UnknownCodeError(
            "unknown", "no charger of your organization has this charger code", "charger_code"
        )
    row, device = found
    if not hasher.verify(row.box_code_hash, box):
        raise WrongBoxCodeError(
            "is not the box code of this charger: the box and the charger do not belong "
            "together (or the box label is of an earlier print)"
        )
    if device.state is LifecycleState.RELEASED or row.released_at is not None:
        raise PairingConflictError("released", "this charger is already released", "charger_code")
    if device.state is not LifecycleState.PROVISIONED:
        raise PairingConflictError(
            "state",
            f"only a provisioned charger can be released; this one is {device.state.value}",
            "charger_code",
        )
    now = utcnow()
    row.released_at, row.released_by, row.released_generation = now, actor.audit_id, row.generation
    device.state = LifecycleState.RELEASED
    session.flush()
    record(
        session,
        actor,
        "device.release",
        "device",
        device.id,
        device.organization_id,
        {
            "state": [LifecycleState.PROVISIONED.value, LifecycleState.RELEASED.value],
            "charger_code": codec.grouped(row.charger_code),
            "generation": row.generation,
        },
    )
    return device


# -- lockout ------------------------------------------------------------------------------------


def locked_for(
    session: Session,
    *,
    device_id: str | None = None,
    user_id: int | None = None,
    now: dt.datetime,
    lockout: int,
) -> int:
    """Seconds the charger (or the user) is still locked out: 0 when it may try.

    Locked when its last ``MAX_FAILURES`` failures all lie within ``lockout`` seconds, until
    ``lockout`` seconds after the last of them. Tries refused while locked are not failures,
    so the lock ends on time; a success deletes the failures.
    """
    column = PairingFailure.device_id if device_id is not None else PairingFailure.user_id
    key: Any = device_id if device_id is not None else user_id
    recent = list(
        session.scalars(
            select(PairingFailure.failed_at)
            .where(
                column == key, PairingFailure.failed_at > now - dt.timedelta(seconds=2 * lockout)
            )
            .order_by(PairingFailure.failed_at.desc(), PairingFailure.id.desc())
            .limit(MAX_FAILURES)
        )
    )
    if len(recent) < MAX_FAILURES or (recent[0] - recent[-1]).total_seconds() > lockout:
        return 0
    left = (recent[0] + dt.timedelta(seconds=lockout) - now).total_seconds()
    return max(0, math.ceil(left))


def _remaining(
    session: Session, *, device_id: str | None, user_id: int, now: dt.datetime, lockout: int
) -> int:
    """Tries left before a lockout: the fewer of the charger's and the user's."""
    since = now - dt.timedelta(seconds=lockout)
    counts = [
        session.scalar(select(func.count()).where(column == key, PairingFailure.failed_at > since))
        or 0
        for column, key in (
            (PairingFailure.user_id, user_id),
            (PairingFailure.device_id, device_id),
        )
        if key is not None
    ]
    return max(0, MAX_FAILURES - max(counts))


def _fail(
    session: Session, device_id: str | None, user_id: int, now: dt.datetime, lockout: int
) -> None:
    session.execute(
        delete(PairingFailure)
        .where(PairingFailure.failed_at < now - dt.timedelta(seconds=2 * lockout))
        .execution_options(synchronize_session=False)
    )
    session.add(PairingFailure(device_id=device_id, user_id=user_id, failed_at=now))
    session.flush()


PAIRING_ATTEMPTS = Counter(
    "ampfleet_pairing_attempts",
    "Pairing attempts past the format check, by outcome (paired, wrong_box_code, locked_out...): "
    "a rise of refusals is someone guessing box codes.",
    ["outcome"],
)


def _attempt(
    session: Session,
    user: Principal,
    outcome: str,
    charger_code: str,
    device: Device | None,
    **details: Any,
) -> None:
    """Audit one pairing attempt (the box code never; the charger code is printed, public)."""
    PAIRING_ATTEMPTS.labels(outcome).inc()
    record(
        session,
        user,
        "pairing.attempt",
        "device" if device is not None else "pairing",
        device.id if device is not None else codec.grouped(charger_code),
        device.organization_id if device is not None else user.organization_id,
        {"outcome": outcome, "charger_code": codec.grouped(charger_code), **details},
    )


# -- pairing ------------------------------------------------------------------------------------


def owners_of(session: Session, device_id: str) -> list[ChargerAccess]:
    """The owner rows of ``device_id``."""
    return list(
        session.scalars(
            select(ChargerAccess).where(
                ChargerAccess.device_id == device_id, ChargerAccess.level == AccessLevel.OWNER
            )
        )
    )


def pair(
    session: Session,
    charger_code: str,
    box_code: str,
    *,
    user: Principal,
    hasher: SecretHasher,
    lockout: int,
    now: dt.datetime | None = None,
) -> Paired:
    """A signed-in user scanned both codes: they become the charger's owner.

    Every attempt past the format check is audited (``pairing.attempt`` with its outcome).
    An unknown charger code counts against the user, a wrong box code against the user and
    the charger; ``MAX_FAILURES`` of either within ``lockout`` seconds lock it out for
    ``lockout`` seconds (LockedOutError). Right codes are still refused (PairingConflictError)
    when the charger is not released, the box code was used already, or the charger has an
    owner. On a refusal the session holds the audit entry and the failure only.
    """
    now = now or utcnow()
    charger = codec.parse_charger_code(charger_code)
    box = codec.parse_box_code(box_code)
    wait = locked_for(session, user_id=user.id, now=now, lockout=lockout)
    if wait:
        _attempt(session, user, "locked_out_user", charger, None, retry_after=wait)
        raise LockedOutError(
            f"too many wrong codes from your account: try again in {wait} s", None, wait
        )
    found = _find(session, charger)
    if found is None:
        hasher.verify(None, box)  # the same time as a wrong box code
        _fail(session, None, user.id, now, lockout)
        left = _remaining(session, device_id=None, user_id=user.id, now=now, lockout=lockout)
        _attempt(session, user, "unknown_charger_code", charger, None, remaining=left)
        raise UnknownCodeError(
            "unknown",
            "no charger has this charger code (check the label on the charger)",
            "charger_code",
        )
    row, device = found
    wait = locked_for(session, device_id=device.id, now=now, lockout=lockout)
    if wait:
        _attempt(session, user, "locked_out_charger", charger, device, retry_after=wait)
        raise LockedOutError(
            f"too many wrong box codes for this charger: try again in {wait} s",
            "charger_code",
            wait,
        )
    if not hasher.verify(row.box_code_hash, box):
        _fail(session, device.id, user.id, now, lockout)
        left = _remaining(session, device_id=device.id, user_id=user.id, now=now, lockout=lockout)
        _attempt(session, user, "wrong_box_code", charger, device, remaining=left)
        tail = (
            f"{left} tries left before a lockout"
            if left
            else f"no tries left: locked out for {lockout} s"
        )
        raise WrongBoxCodeError(
            f"is not the box code of this charger (the code in its box); {tail}", left
        )
    refusal = _conflict(session, row, device)
    if refusal is not None:
        _attempt(session, user, refusal.reason, charger, device)
        raise refusal
    # Single use, decided in the database: of two users racing with the right codes, one wins.
    marked = session.execute(
        update(ChargerCodes)
        .where(ChargerCodes.device_id == device.id, ChargerCodes.box_code_used_at.is_(None))
        .values(box_code_used_at=now, box_code_used_by=user.id)
        .execution_options(synchronize_session=False)
    )
    if getattr(marked, "rowcount", 0) != 1:
        refusal = _used()
        _attempt(session, user, refusal.reason, charger, device)
        raise refusal
    session.refresh(row)
    granted, changes = access.grant(
        session, device.id, user.id, AccessLevel.OWNER, None, None, user.id
    )
    session.execute(
        delete(PairingFailure)
        .where((PairingFailure.device_id == device.id) | (PairingFailure.user_id == user.id))
        .execution_options(synchronize_session=False)
    )
    _attempt(session, user, "paired", charger, device, user_id=user.id)
    if changes:
        record(
            session,
            user,
            "charger_access.grant",
            "device",
            device.id,
            device.organization_id,
            {**access.describe(granted), "changes": changes, "cause": "pairing"},
        )
    outbox.request_lists(session, [device.id])
    return Paired(device, granted, now)


def _used() -> PairingConflictError:
    return PairingConflictError(
        "box_code_used",
        "was used already to pair this charger: its owner may invite you or transfer it to "
        "you; after a factory reset of the charger the box code pairs once more",
        "box_code",
    )


def _conflict(session: Session, row: ChargerCodes, device: Device) -> PairingConflictError | None:
    if device.state not in PAIRABLE:
        why = (
            "has not been released by the factory yet"
            if device.state in (LifecycleState.MANUFACTURED, LifecycleState.PROVISIONED)
            else f"is {device.state.value}"
        )
        return PairingConflictError(
            "not_pairable", f"this charger {why}: it cannot be paired", "charger_code"
        )
    if row.box_code_used_at is not None:
        return _used()
    if owners_of(session, device.id):
        return PairingConflictError(
            "owned",
            "this charger has an owner already: they may invite you or transfer it to you",
            "charger_code",
        )
    return None


def unpair(session: Session, device: Device, *, user: Principal) -> list[dict[str, Any]]:
    """The user gives the charger up: their owner row goes; when they were its last owner, its
    guests and pending invitations go too (nobody is left to manage them). The box code stays
    used: pairing again takes a factory reset of the charger. Returns the access removed.

    PairingError (``not_owner``) when the user does not own the charger.
    """
    mine = access.find(session, device.id, user.id)
    if mine is None or mine.level is not AccessLevel.OWNER:
        raise PairingError("not_owner", "you do not own this charger", None)
    removed = [access.describe(mine)]
    session.delete(mine)
    session.flush()
    if not owners_of(session, device.id):
        removed += _clear(session, device.id)
    record(
        session,
        user,
        "pairing.unpair",
        "device",
        device.id,
        device.organization_id,
        {"removed": removed},
    )
    outbox.request_lists(session, [device.id])
    return removed


def transfer(
    session: Session, device: Device, *, user: Principal, to: User
) -> tuple[ChargerAccess, list[dict[str, Any]]]:
    """The owner hands the charger over to ``to``: every owner and guest of it (the giver too)
    and its pending invitations go, ``to`` becomes its one owner. No code is needed again.

    PairingError naming the field: ``not_owner`` (no field), ``email`` (the receiver is the
    giver, or their account is disabled).
    """
    mine = access.find(session, device.id, user.id)
    if mine is None or mine.level is not AccessLevel.OWNER:
        raise PairingError("not_owner", "you do not own this charger", None)
    if to.id == user.id:
        raise PairingError("self", "is your own account: the charger is yours already", "email")
    if not to.is_active:
        raise PairingError("disabled", "the account of this e-mail is disabled", "email")
    removed = _clear(session, device.id)
    granted, _ = access.grant(session, device.id, to.id, AccessLevel.OWNER, None, None, user.id)
    record(
        session,
        user,
        "pairing.transfer",
        "device",
        device.id,
        device.organization_id,
        {"from_user_id": user.id, "to_user_id": to.id, "removed": removed},
    )
    outbox.request_lists(session, [device.id])
    return granted, removed


def _clear(session: Session, device_id: str) -> list[dict[str, Any]]:
    """Delete every owner and guest of the charger and revoke its pending invitations."""
    rows = list(session.scalars(select(ChargerAccess).where(ChargerAccess.device_id == device_id)))
    removed = [access.describe(r) for r in rows]
    for r in rows:
        session.delete(r)
    session.execute(
        update(Invitation)
        .where(
            Invitation.device_id == device_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return removed


def factory_reset(
    session: Session, device: Device, *, happened_at: dt.datetime, worker: str
) -> list[dict[str, Any]] | None:
    """The charger reports a factory reset (event ``factory_reset``): its owners and guests go,
    its pending invitations are revoked, its box code pairs once more (whoever holds the
    charger and its box may pair it). Audited as the system (``device.factory_reset``).

    None (nothing done) for a reset that happened before the box code last paired: a late
    redelivery must not take the charger from the owner who paired it since.
    """
    row = _codes_of(session, device.id)
    if row is not None and row.box_code_used_at is not None and happened_at < row.box_code_used_at:
        return None
    removed = _clear(session, device.id)
    if row is not None:
        row.box_code_used_at = row.box_code_used_by = None
    session.execute(
        delete(PairingFailure)
        .where(PairingFailure.device_id == device.id)
        .execution_options(synchronize_session=False)
    )
    entry = record(
        session,
        None,
        "device.factory_reset",
        "device",
        device.id,
        device.organization_id,
        {
            "removed": removed,
            "happened_at": happened_at.isoformat(),
            "box_code_rearmed": row is not None,
        },
    )
    entry.actor_id = f"system:{worker}"
    entry.actor_name = f"{worker} worker"
    outbox.request_lists(session, [device.id])
    return removed
