"""Charging sessions on the records, built from the chargers' events (docs/device-contract.md 14).

``apply_event`` is the one way a charger's word reaches a ``ChargingSession``:

* ``charging.started`` creates the session, or fills the REQUESTED one the app asked for (its
  ``id_tag`` is the request's ``app-...`` tag). A card (``id_tag`` a card of the device's
  organization) makes it an RFID session attributed to the card and its user; no ``id_tag``
  makes it FREE; a guest credential's id tag (``gst-...``, ``cloud.access.guestpass``) makes
  it a GUEST session of the credential's user. A card (or credential) the cloud does not
  accept (unknown, disabled, or its user may not charge here now:
  ``authorization.may_charge``) is recorded all the same, and the caller gets a
  :class:`StopSession` effect: the charger accepted it offline, the cloud ends it (contract
  4.9), and the record says ``card_refused`` once it stopped.
* ``charging.stopped`` completes the session exactly once: energy, duration, reasons
  (``cloud.charging.reasons``), the tariff in force (device, else site, else organization) and
  the cost (``cloud.charging.tariffs``). A stop that arrives before its start (an offline
  replay) still makes one complete record; the late start then only adds what was missing.
* ``charging.meter_start`` fills the start of a running session whose ``charging.started``
  carried no meter value (OCPP 2.0.1 E01-E02): the first meter value of the session is its
  start (J02). The record is where that first value is kept, so it is filled only while
  empty: a redelivery, or a later value from a bridge that forgot the session, changes
  nothing. A stop finds the start in the record, else takes the stop's ``meter_start_wh``;
  only when neither knows one is the start taken as the stop (energy 0).
* ``authorization.refused`` records a REFUSED attempt, keyed ``refused:{ts}:{seq}`` (the
  contract's de-duplication key of events, 7) so that a redelivery is recorded once.

Idempotent by (device, charger session id): a redelivered or replayed event changes nothing.
Safe under concurrency on SQLite and MariaDB: state changes are conditional UPDATEs
(``... WHERE state = 'active'``) whose row count says who won, and a concurrent insert of the
same session hits the unique constraint. The loser raises (``IntegrityError`` or
:class:`ConcurrentChangeError`); the caller rolls back and applies the event again in a new
transaction, which then sees the winner's row and does nothing.

Every function works in the caller's session and leaves the commit to it.

Exceptions::

    ChargingError (cloud.charging)
    ├── MalformedEventError      a charging event whose data breaks contract 14 (events)
    ├── ConcurrentChangeError    another transaction changed the session first: apply again
    └── SessionNotActiveError    a stop asked of a session that is not running
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.access import guestpass
from cloud.access.authlists import may_charge
from cloud.access.models import RfidCard
from cloud.billing import tariffs
from cloud.billing.models import Tariff
from cloud.charging import ChargingError, reasons
from cloud.charging.events import (
    MeterStart,
    Refused,
    Started,
    Stopped,
    parse_event,
)
from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.commands.models import DeviceCommand
from cloud.commands.service import request_command
from cloud.devices.models import Device, DeviceStatus
from cloud.identity.principal import Principal
from cloud.organizations.models import Site
from firmware.core import contract

log = logging.getLogger(__name__)

# An event that arrives this long after its ``ts`` was held by the charger while it was
# offline (contract 7): the session is marked reconciled.
RECONCILE_AFTER = dt.timedelta(seconds=60)
# Events sent at once after a reconnect may carry a ts a little before the status worker
# recorded it; only older ones count as held.
RECONNECT_SLACK = dt.timedelta(seconds=2)
# ``stop_requested_by`` of a session whose card the cloud refused after the start: it marks
# the session so that its stop is recorded as card_refused whoever sends the command.
CARD_REFUSED_BY = "cloud:card_refused"
APP_TAG_PREFIX = "app-"
_TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class ConcurrentChangeError(ChargingError):
    """Another transaction changed the session first; apply the event again."""


class SessionNotActiveError(ChargingError):
    """The session is not running (requested, completed, failed or refused)."""

    def __init__(self, state: SessionState) -> None:
        super().__init__(f"the session is {state.value}, not active: nothing to stop")
        self.state = state


@dataclasses.dataclass(frozen=True)
class StopSession:
    """Effect: send ``charging.stop`` for this session (the cloud refused its card)."""

    session_id: str
    device_id: str
    connector: int
    reason: str = "deauthorized"  # contract 14's word; recorded as card_refused


Effect = StopSession


# -- helpers -----------------------------------------------------------------------------------
def new_session_id() -> str:
    """A session record id (32 hex characters)."""
    return uuid.uuid4().hex


def new_app_tag() -> str:
    """An id tag for an app or guest start: ``app-`` and 12 of [a-z0-9] (fits CiString20)."""
    return APP_TAG_PREFIX + "".join(secrets.choice(_TAG_ALPHABET) for _ in range(12))


def _at(ms: int) -> dt.datetime:
    """An event time as stored: whole seconds (what a MariaDB DATETIME keeps), aware UTC."""
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC)


def _by_charger_id(session: Session, device_id: str, charger_id: str) -> ChargingSession | None:
    return session.scalar(
        select(ChargingSession).where(
            ChargingSession.device_id == device_id,
            ChargingSession.charger_session_id == charger_id,
        )
    )


def find_card(session: Session, organization_id: int, id_tag: str) -> RfidCard | None:
    """The organization's card with this uid (stored upper-case; chargers may send either)."""
    return session.scalar(
        select(RfidCard)
        .where(
            RfidCard.organization_id == organization_id,
            RfidCard.uid.in_(sorted({id_tag, id_tag.upper()})),
        )
        .order_by(RfidCard.id)
        .limit(1)
    )


@dataclasses.dataclass
class _Attribution:
    source: SessionSource
    user_id: int | None = None
    card_id: int | None = None
    requested: ChargingSession | None = None  # the app/guest request this start answers
    refused: str | None = None  # why the cloud does not accept the card


def _attribute(
    session: Session, device: Device, id_tag: str | None, at: dt.datetime
) -> _Attribution:
    """Who a session belongs to, from the id tag the charger reports."""
    if id_tag is None:
        return _Attribution(SessionSource.FREE)
    requested = session.scalar(
        select(ChargingSession)
        .where(
            ChargingSession.device_id == device.id,
            ChargingSession.id_tag == id_tag,
            ChargingSession.charger_session_id.is_(None),
            # FAILED too: a start the cloud gave up on may still happen (an EV plugged late).
            ChargingSession.state.in_([SessionState.REQUESTED, SessionState.FAILED]),
        )
        .order_by(ChargingSession.created_at.desc())
        .limit(1)
    )
    if requested is not None:
        return _Attribution(
            requested.source, requested.user_id, requested.card_id, requested=requested
        )
    if guestpass.is_guest_tag(id_tag):
        return _attribute_guest(session, device, id_tag, at)
    card = find_card(session, device.organization_id, id_tag)
    if card is None:
        return _Attribution(SessionSource.RFID, refused="unknown card")
    who = _Attribution(SessionSource.RFID, card.user_id, card.id)
    if not card.enabled:
        who.refused = "disabled card"
    elif not may_charge(session, card.user_id, device, at):
        who.refused = "the card's user may not charge on this charger now"
    return who


def _attribute_guest(
    session: Session, device: Device, id_tag: str, at: dt.datetime
) -> _Attribution:
    """A session a guest credential started (offline, most likely): the credential names the
    guest; the cloud confirms the right as for a card (the access may have been withdrawn
    since the credential was issued: the charger could not know)."""
    credential = guestpass.find(session, device.id, id_tag)
    if credential is None:
        return _Attribution(SessionSource.GUEST, refused="unknown guest credential")
    who = _Attribution(SessionSource.GUEST, credential.user_id)
    if not may_charge(session, credential.user_id, device, at):
        who.refused = "the guest may not charge on this charger now"
    return who


def tariff_for(session: Session, device: Device) -> Tariff | None:
    """The tariff in force for a device: its own, else its site's, else the organization's."""
    candidates = [Tariff.device_id == device.id]
    if device.site_id is not None:
        candidates.append((Tariff.site_id == device.site_id) & Tariff.device_id.is_(None))
    candidates.append(Tariff.site_id.is_(None) & Tariff.device_id.is_(None))
    for condition in candidates:
        found = session.scalar(
            select(Tariff)
            .where(Tariff.organization_id == device.organization_id, condition)
            .order_by(Tariff.id.desc())  # should two exist at one level, the newest wins
            .limit(1)
        )
        if found is not None:
            return found
    return None


def timezone_of(session: Session, device: Device) -> str:
    """The IANA zone of the device's site (UTC without a site)."""
    if device.site_id is None:
        return "UTC"
    site = session.get(Site, device.site_id)
    return site.timezone if site is not None and site.timezone else "UTC"


def price(
    session: Session,
    device: Device,
    started_at: dt.datetime,
    stopped_at: dt.datetime,
    energy_wh: float,
) -> tuple[Tariff | None, int | None]:
    """The tariff in force and the session's cost in whole cents (None: no tariff)."""
    tariff = tariff_for(session, device)
    if tariff is None:
        return None, None
    zone = timezone_of(session, device)
    try:
        windows = tariffs.stored_windows(tariff.windows)
        tariffs.zone(zone)
    except tariffs.TariffError as exc:
        # Stored data is validated when written; should it be broken, bill the base price
        # in UTC rather than lose the session.
        log.error("tariff %s or site zone %r unusable (%s): base price, UTC", tariff.id, zone, exc)
        windows, zone = (), "UTC"
    costing = tariffs.price_session(
        Decimal(tariff.price_per_kwh),
        windows,
        zone,
        started_at,
        stopped_at,
        Decimal(str(energy_wh)),
    )
    return tariff, int(costing.cost_cents)


# -- events ------------------------------------------------------------------------------------
def _while_offline(session: Session, device_id: str, at: dt.datetime) -> bool:
    """True when the event happened while the cloud saw the charger offline, or before its
    current connection began: either way the charger held it in its outbox (contract 7)."""
    status = session.get(DeviceStatus, device_id)
    if status is None:
        return False
    if status.online:
        return at < status.changed_at - RECONNECT_SLACK
    return at >= status.changed_at


def apply_event(
    session: Session, device: Device, event: contract.Event, now: dt.datetime
) -> list[Effect]:
    """Apply a charger's charging event to the records; the effects the caller must carry out.

    Raises ``events.MalformedEventError`` for bad ``data``, and IntegrityError or
    ConcurrentChangeError when another transaction got there first (roll back, apply again).
    """
    parsed = parse_event(event)
    if parsed is None:
        return []
    at = _at(event.ts)
    late = now - at > RECONCILE_AFTER or _while_offline(session, device.id, at)
    if isinstance(parsed, Started):
        return _started(session, device, parsed, at, late, now)
    if isinstance(parsed, Stopped):
        _stopped(session, device, parsed, at, late)
        return []
    if isinstance(parsed, MeterStart):
        _meter_start(session, device, parsed)
        return []
    _refused(session, device, parsed, event, at, late)
    return []


def _started(
    session: Session,
    device: Device,
    started: Started,
    at: dt.datetime,
    late: bool,
    now: dt.datetime,
) -> list[Effect]:
    existing = _by_charger_id(session, device.id, started.session)
    if existing is not None:
        # A redelivery, or the start of a session whose stop came first (offline replay):
        # add what only the start knows, change nothing else (the cost stands).
        if existing.meter_start_wh is None and started.meter_start_wh is not None:
            existing.meter_start_wh = started.meter_start_wh
        if late and not existing.reconciled:
            existing.reconciled = True
        return []
    who = _attribute(session, device, started.id_tag, at)
    if who.requested is not None:
        request = who.requested
        filled = session.execute(
            update(ChargingSession)
            .where(
                ChargingSession.id == request.id,
                ChargingSession.charger_session_id.is_(None),
                ChargingSession.state.in_([SessionState.REQUESTED, SessionState.FAILED]),
            )
            .values(
                charger_session_id=started.session,
                state=SessionState.ACTIVE,
                connector=started.connector or request.connector,
                started_at=at,
                meter_start_wh=started.meter_start_wh,
                reconciled=late,
            )
            .execution_options(synchronize_session=False)
        )
        if filled.rowcount != 1:  # type: ignore[attr-defined]
            raise ConcurrentChangeError(f"request {request.id} was answered concurrently")
        session.expire(request)
        return []
    record = ChargingSession(
        id=new_session_id(),
        device_id=device.id,
        organization_id=device.organization_id,
        site_id=device.site_id,
        charger_session_id=started.session,
        connector=started.connector or 1,
        source=who.source,
        state=SessionState.ACTIVE,
        user_id=who.user_id,
        card_id=who.card_id,
        id_tag=started.id_tag,
        started_at=at,
        meter_start_wh=started.meter_start_wh,
        energy_wh=0.0,
        reconciled=late,
    )
    effects: list[Effect] = []
    if who.refused is not None:
        log.info(
            "%s: session %s started with %s (%s): stopping it",
            device.id,
            started.session,
            started.id_tag,
            who.refused,
        )
        record.stop_requested_by = CARD_REFUSED_BY
        record.stop_requested_at = now
        effects.append(StopSession(record.id, device.id, record.connector))
    session.add(record)
    session.flush()  # a concurrent start of the same session fails here: apply again
    return effects


def _meter_start(session: Session, device: Device, meter_start: MeterStart) -> None:
    """Fill the missing start of a running session with its first meter value: once, by a
    conditional UPDATE, so a redelivered or later value changes nothing."""
    session.execute(
        update(ChargingSession)
        .where(
            ChargingSession.device_id == device.id,
            ChargingSession.charger_session_id == meter_start.session,
            ChargingSession.state == SessionState.ACTIVE,
            ChargingSession.meter_start_wh.is_(None),
        )
        .values(meter_start_wh=meter_start.meter_start_wh)
        .execution_options(synchronize_session=False)
    )


def _stopped(
    session: Session, device: Device, stopped: Stopped, at: dt.datetime, late: bool
) -> None:
    existing = _by_charger_id(session, device.id, stopped.session)
    if existing is not None and existing.state is not SessionState.ACTIVE:
        return  # completed already (a redelivery, a second stop): the record stands
    request: ChargingSession | None = None
    who: _Attribution | None = None
    if existing is None:
        started_guess = at - dt.timedelta(seconds=stopped.duration_s or 0)
        who = _attribute(session, device, stopped.id_tag, started_guess)
        request = who.requested
    base = existing or request
    started_at = base.started_at if base is not None and base.started_at else None
    if started_at is None:
        started_at = at - dt.timedelta(seconds=stopped.duration_s or 0)
    started_at = min(started_at, at)
    duration = (
        stopped.duration_s
        if stopped.duration_s is not None
        else int((at - started_at).total_seconds())
    )
    meter_start = base.meter_start_wh if base is not None else None
    if meter_start is None:
        meter_start = stopped.meter_start_wh  # the first value the charger saw (contract 14)
    energy = stopped.energy_wh
    if energy is None:
        known = meter_start is not None and stopped.meter_stop_wh is not None
        energy = max(0.0, stopped.meter_stop_wh - meter_start) if known else 0.0  # type: ignore[operator]
    if meter_start is None and stopped.meter_stop_wh is not None:
        meter_start = max(0.0, stopped.meter_stop_wh - energy)
    refused_by_cloud = existing is not None and existing.stop_requested_by == CARD_REFUSED_BY
    tariff, cost = price(session, device, started_at, at, energy)
    values: dict[str, Any] = {
        "state": SessionState.COMPLETED,
        "started_at": started_at,
        "stopped_at": at,
        "meter_start_wh": meter_start,
        "meter_stop_wh": stopped.meter_stop_wh,
        "energy_wh": energy,
        "duration_s": duration,
        "stop_reason": reasons.CARD_REFUSED
        if refused_by_cloud
        else reasons.stop_reason(stopped.reason, stopped.ocpp_reason),
        "charger_reason": reasons.charger_reason(stopped.reason, stopped.ocpp_reason),
        "tariff_id": tariff.id if tariff is not None else None,
        "currency": tariff.currency if tariff is not None else None,
        "cost_cents": cost,
        "power_w": None,
    }
    if existing is not None:
        values["reconciled"] = existing.reconciled or late
        _complete(session, existing, ChargingSession.state == SessionState.ACTIVE, values)
        return
    if request is not None:
        values |= {
            "charger_session_id": stopped.session,
            "connector": stopped.connector or request.connector,
            "reconciled": late,
        }
        condition = ChargingSession.charger_session_id.is_(None) & ChargingSession.state.in_(
            [SessionState.REQUESTED, SessionState.FAILED]
        )
        _complete(session, request, condition, values)
        return
    assert who is not None  # set above whenever there is no existing record
    session.add(
        ChargingSession(
            id=new_session_id(),
            device_id=device.id,
            organization_id=device.organization_id,
            site_id=device.site_id,
            charger_session_id=stopped.session,
            connector=stopped.connector or 1,
            source=who.source,
            user_id=who.user_id,
            card_id=who.card_id,
            id_tag=stopped.id_tag,
            reconciled=late,
            **values,
        )
    )
    session.flush()  # a concurrent report of the same session fails here: apply again


def _complete(
    session: Session, record: ChargingSession, condition: Any, values: dict[str, Any]
) -> None:
    """The one conditional UPDATE that ends a session: whoever changes the row wins."""
    done = session.execute(
        update(ChargingSession)
        .where(ChargingSession.id == record.id, condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentChangeError(f"session {record.id} was completed concurrently")
    session.expire(record)


def _refused(
    session: Session,
    device: Device,
    refused: Refused,
    event: contract.Event,
    at: dt.datetime,
    late: bool,
) -> None:
    key = f"refused:{event.ts}:{event.seq}"
    if _by_charger_id(session, device.id, key) is not None:
        return
    card = find_card(session, device.organization_id, refused.id_tag)
    source, user_id = SessionSource.RFID, card.user_id if card is not None else None
    if guestpass.is_guest_tag(refused.id_tag):  # a guest credential the charger refused
        credential = guestpass.find(session, device.id, refused.id_tag)
        source, user_id = SessionSource.GUEST, credential.user_id if credential else None
    session.add(
        ChargingSession(
            id=new_session_id(),
            device_id=device.id,
            organization_id=device.organization_id,
            site_id=device.site_id,
            charger_session_id=key,
            connector=refused.connector or 1,
            source=source,
            state=SessionState.REFUSED,
            user_id=user_id,
            card_id=card.id if card is not None else None,
            id_tag=refused.id_tag,
            started_at=at,
            stopped_at=at,
            energy_wh=0.0,
            duration_s=0,
            charger_reason=(refused.reason or "unknown")[: reasons.MAX_CHARGER_REASON],
            reconciled=late,
        )
    )
    session.flush()


# -- effects and requests from the API ---------------------------------------------------------
def request_effects(
    session: Session, device: Device, effects: list[Effect], timeout: dt.timedelta
) -> list[DeviceCommand]:
    """Record the commands the effects call for (pending, audited), in the caller's
    transaction: once committed, a command the broker does not take is re-sent by the config
    worker's sweep, so a refused card is stopped even if the worker dies right after."""
    commands = []
    for effect in effects:
        commands.append(
            request_command(
                session, device, "charging.stop", {"connector": effect.connector}, timeout, None
            )
        )
    return commands


def request_start(
    session: Session,
    device: Device,
    connector: int,
    source: SessionSource,
    actor: Principal,
    timeout: dt.timedelta,
) -> tuple[ChargingSession, DeviceCommand]:
    """A REQUESTED session and its ``charging.start`` command (contract 14); caller commits."""
    tag = new_app_tag()
    command = request_command(
        session, device, "charging.start", {"connector": connector, "id_tag": tag}, timeout, actor
    )
    record = ChargingSession(
        id=new_session_id(),
        device_id=device.id,
        organization_id=device.organization_id,
        site_id=device.site_id,
        connector=connector,
        source=source,
        state=SessionState.REQUESTED,
        user_id=actor.id if actor.kind == "user" else None,
        id_tag=tag,
        command_id=command.id,
        energy_wh=0.0,
    )
    session.add(record)
    session.flush()
    return record, command


def busy(
    session: Session, device_id: str, connector: int, now: dt.datetime, start_timeout: dt.timedelta
) -> ChargingSession | None:
    """The session running (or being started) on a connector, if any."""
    return session.scalar(
        select(ChargingSession)
        .where(
            ChargingSession.device_id == device_id,
            ChargingSession.connector == connector,
            (ChargingSession.state == SessionState.ACTIVE)
            | (
                (ChargingSession.state == SessionState.REQUESTED)
                & (ChargingSession.created_at > now - start_timeout)
            ),
        )
        .limit(1)
    )


def request_stop(
    session: Session, record: ChargingSession, actor: Principal, now: dt.datetime
) -> ChargingSession:
    """Note who asked to stop a running session (the charger's ``charging.stopped`` ends it).

    The first request is kept: asking again (or after the cloud refused the card) changes
    nothing, and sending the stop command again is harmless. SessionNotActiveError when the
    session is not running.
    """
    asked = session.execute(
        update(ChargingSession)
        .where(
            ChargingSession.id == record.id,
            ChargingSession.state == SessionState.ACTIVE,
            ChargingSession.stop_requested_by.is_(None),
        )
        .values(stop_requested_by=actor.audit_id, stop_requested_at=now)
        .execution_options(synchronize_session=False)
    )
    if asked.rowcount != 1:  # type: ignore[attr-defined]
        # A locking read: the row as committed now, not as this transaction first saw it.
        state = session.scalar(
            select(ChargingSession.state).where(ChargingSession.id == record.id).with_for_update()
        )
        if state is not SessionState.ACTIVE:
            session.expire(record)
            raise SessionNotActiveError(state or record.state)
    session.expire(record)
    return record


def fail_unstarted(session: Session, now: dt.datetime, start_timeout: dt.timedelta) -> list[str]:
    """Mark FAILED the requests whose start command failed or that waited too long; their ids.

    A start that happens after all still fills the record (``charging.started`` matches
    FAILED requests by their id tag too).
    """
    from cloud.commands.models import CommandState

    failed_states = [CommandState.REJECTED, CommandState.ERROR, CommandState.TIMED_OUT]
    waiting = list(
        session.scalars(
            select(ChargingSession).where(ChargingSession.state == SessionState.REQUESTED)
        )
    )
    failed: list[str] = []
    for record in waiting:
        command = session.get(DeviceCommand, record.command_id) if record.command_id else None
        if command is not None and command.state in failed_states:
            why = command.reason or command.state.value
        elif record.created_at < now - start_timeout:
            why = "no charging.started from the charger in time"
        else:
            continue
        done = session.execute(
            update(ChargingSession)
            .where(
                ChargingSession.id == record.id,
                ChargingSession.state == SessionState.REQUESTED,
            )
            .values(state=SessionState.FAILED, charger_reason=why[: reasons.MAX_CHARGER_REASON])
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            failed.append(record.id)
    return failed
