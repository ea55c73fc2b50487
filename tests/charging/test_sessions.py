"""The sessions service on the real records backends (SQLite and MariaDB): sessions built from
the chargers' events (contract 14), idempotent, attributed to cards and users, priced by the
most specific tariff, complete when a stop arrives before its start, and ended exactly once when
two stops race (two worker threads, or the API and the charger)."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from cloud.access.models import RfidCard
from cloud.billing.models import Tariff
from cloud.charging import events, sessions
from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.charging.worker import ChargingWorker
from cloud.commands.models import CommandState, DeviceCommand
from cloud.db import Database, get_database, utcnow
from cloud.devicelink.endpoint import Endpoint
from cloud.devices.models import Device
from cloud.identity.principal import Principal
from firmware.core import contract
from tests.helpers import Tenant

SEQ = iter(range(1, 10**9))


def now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def event(kind: str, data: dict[str, Any], ts: int | None = None) -> contract.Event:
    """A charging event as a charger publishes it, through the real codec."""
    payload = contract.encode_event(ts or now_ms(), next(SEQ), kind, "info", data)
    return contract.decode_event(payload, now_ms())


def payload(kind: str, data: dict[str, Any], ts: int | None = None) -> bytes:
    return contract.encode_event(ts or now_ms(), next(SEQ), kind, "info", data)


def started(
    session: str, id_tag: str | None = None, meter: float = 1000.0, **more: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"session": session, "connector": 1, "meter_start_wh": meter, **more}
    if id_tag is not None:
        data["id_tag"] = id_tag
    return data


def stopped(
    session: str,
    energy: float,
    duration: int,
    reason: str = "remote",
    id_tag: str | None = None,
    meter_start: float = 1000.0,
    **more: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "session": session,
        "connector": 1,
        "meter_stop_wh": meter_start + energy,
        "energy_wh": energy,
        "duration_s": duration,
        "reason": reason,
        **more,
    }
    if id_tag is not None:
        data["id_tag"] = id_tag
    return data


def charger_id() -> str:
    return "s-" + secrets.token_hex(6)


class Records:
    """The test's window on the records database."""

    def __init__(self, app: Flask, tenant: Tenant) -> None:
        self.app = app
        self.tenant = tenant
        self.db: Database = get_database(app)

    def device(self, **fields: Any) -> Device:
        made = self.tenant.device(state="active", **fields)
        with self.db.transaction() as s:
            found = s.get(Device, made["id"])
            assert found is not None
            s.expunge(found)
            return found

    def site(self, timezone: str) -> int:
        body = {
            "organization_id": self.tenant.id,
            "name": secrets.token_hex(4),
            "timezone": timezone,
        }
        return int(self.tenant.admin.created("/sites", body)["id"])

    def card(self, user_id: int, enabled: bool = True) -> RfidCard:
        uid = secrets.token_hex(4).upper()
        with self.db.transaction() as s:
            card = RfidCard(
                organization_id=self.tenant.id, uid=uid, user_id=user_id, enabled=enabled
            )
            s.add(card)
            s.flush()
            s.expunge(card)
            return card

    def tariff(self, price: str, windows: list[dict[str, str]] | None = None, **scope: Any) -> int:
        with self.db.transaction() as s:
            tariff = Tariff(
                organization_id=self.tenant.id,
                name=secrets.token_hex(3),
                price_per_kwh=Decimal(price),
                windows=windows or [],
                **scope,
            )
            s.add(tariff)
            s.flush()
            return tariff.id

    def apply(
        self, device: Device, ev: contract.Event, now: dt.datetime | None = None
    ) -> list[sessions.Effect]:
        with self.db.transaction() as s:
            return sessions.apply_event(s, s.get(Device, device.id), ev, now or utcnow())  # type: ignore[arg-type]

    def session(self, device: Device, charger_session: str) -> ChargingSession:
        with self.db.transaction() as s:
            found = s.scalar(
                select(ChargingSession).where(
                    ChargingSession.device_id == device.id,
                    ChargingSession.charger_session_id == charger_session,
                )
            )
            assert found is not None, charger_session
            s.expunge(found)
            return found

    def all_of(self, device: Device) -> list[ChargingSession]:
        with self.db.transaction() as s:
            found = list(
                s.scalars(select(ChargingSession).where(ChargingSession.device_id == device.id))
            )
            for row in found:
                s.expunge(row)
            return found


@pytest.fixture
def records(app: Flask, tenant: Tenant) -> Records:
    return Records(app, tenant)


def user_principal(user: dict[str, Any], organization_id: int) -> Principal:
    return Principal("user", user["id"], user["email"], organization_id, ())


# -- starts --------------------------------------------------------------------------------------
def test_an_app_start_is_filled_by_the_chargers_start_and_completed_by_its_stop(
    records: Records,
) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    records.tariff("0.3000")
    with records.db.transaction() as s:
        request, command = sessions.request_start(
            s,
            s.get(Device, device.id),  # type: ignore[arg-type]
            1,
            SessionSource.APP,
            user_principal(user, records.tenant.id),
            dt.timedelta(minutes=5),
        )
        tag, request_id = request.id_tag, request.id
    assert tag is not None and tag.startswith("app-") and len(tag) == 16 and len(tag) <= 20
    assert command.args == {"connector": 1, "id_tag": tag} and command.name == "charging.start"

    sid = charger_id()
    assert records.apply(device, event("charging.started", started(sid, tag))) == []
    running = records.session(device, sid)
    assert (running.id, running.state, running.source) == (
        request_id,
        SessionState.ACTIVE,
        SessionSource.APP,
    )
    assert running.user_id == user["id"] and running.meter_start_wh == 1000.0
    assert running.reconciled is False

    records.apply(device, event("charging.stopped", stopped(sid, 7400.0, 3600, "remote", tag)))
    done = records.session(device, sid)
    assert done.state is SessionState.COMPLETED and done.stop_reason == "remote"
    assert (done.energy_wh, done.meter_stop_wh, done.duration_s) == (7400.0, 8400.0, 3600)
    assert done.cost_cents == 222 and done.currency == "EUR"  # 7.4 kWh x 0.30
    assert [s.id for s in records.all_of(device)] == [request_id]


def test_a_known_card_starts_an_rfid_session_of_its_user(records: Records) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    card = records.card(user["id"])
    sid = charger_id()
    assert records.apply(device, event("charging.started", started(sid, card.uid.lower()))) == []
    running = records.session(device, sid)
    assert (running.source, running.card_id, running.user_id) == (
        SessionSource.RFID,
        card.id,
        user["id"],
    )
    assert running.stop_requested_by is None


def test_no_id_tag_is_a_free_session(records: Records) -> None:
    device = records.device()
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid)))
    running = records.session(device, sid)
    assert (running.source, running.user_id, running.card_id) == (SessionSource.FREE, None, None)


@pytest.mark.parametrize("why", ["unknown", "disabled", "no_right"])
def test_a_card_the_cloud_refuses_is_recorded_stopped_and_ends_as_card_refused(
    records: Records, why: str
) -> None:
    device = records.device()
    if why == "unknown":
        tag, card_id, user_id = "DEADBEEF" + secrets.token_hex(2).upper(), None, None
    else:
        user, _ = records.tenant.user("support" if why == "no_right" else "owner")
        card = records.card(user["id"], enabled=why != "disabled")
        tag, card_id, user_id = card.uid, card.id, user["id"]
    sid = charger_id()
    effects = records.apply(device, event("charging.started", started(sid, tag)))
    running = records.session(device, sid)
    assert effects == [sessions.StopSession(running.id, device.id, 1)]
    assert running.state is SessionState.ACTIVE and running.source is SessionSource.RFID
    assert (running.card_id, running.user_id) == (card_id, user_id)
    assert running.stop_requested_by == sessions.CARD_REFUSED_BY

    # The charger obeys the stop command: its reason says remote, the record says why.
    records.apply(device, event("charging.stopped", stopped(sid, 120.0, 60, "remote", tag)))
    done = records.session(device, sid)
    assert done.state is SessionState.COMPLETED
    assert (done.stop_reason, done.charger_reason) == ("card_refused", "remote")


def test_the_effects_commands_are_recorded_for_the_config_worker_to_resend(
    records: Records,
) -> None:
    device = records.device()
    effects = [sessions.StopSession("x", device.id, 2)]
    with records.db.transaction() as s:
        made = sessions.request_effects(
            s,
            s.get(Device, device.id),
            effects,
            dt.timedelta(minutes=1),  # type: ignore[arg-type]
        )
        assert [(c.name, c.args, c.state, c.sent_at) for c in made] == [
            ("charging.stop", {"connector": 2}, CommandState.PENDING, None)
        ]


# -- stops, idempotency, reconciliation ----------------------------------------------------------
def test_redelivered_events_change_nothing(records: Records) -> None:
    device = records.device()
    records.tariff("0.2500")
    sid = charger_id()
    start = event("charging.started", started(sid))
    stop = event("charging.stopped", stopped(sid, 1000.0, 600, "ev_disconnected"))
    for ev in (start, start, stop, stop):
        assert records.apply(device, ev) == []
    # A second, different stop report of the same session (a buggy charger) changes nothing.
    records.apply(device, event("charging.stopped", stopped(sid, 9999.0, 6000, "fault")))
    records.apply(device, start)
    [done] = records.all_of(device)
    assert (done.energy_wh, done.stop_reason, done.cost_cents) == (1000.0, "ev_disconnected", 25)


def test_a_stop_before_its_start_makes_one_complete_record(records: Records) -> None:
    # Offline replay out of order: the stop first, then the start, both two hours old.
    device = records.device()
    user, _ = records.tenant.user("owner")
    card = records.card(user["id"])
    records.tariff("0.4000")
    sid = charger_id()
    stop_ms = now_ms() - 2 * 3600 * 1000
    start_ms = stop_ms - 1800 * 1000
    records.apply(
        device,
        event("charging.stopped", stopped(sid, 3000.0, 1800, "local", card.uid, 500.0), stop_ms),
    )
    first = records.session(device, sid)
    assert first.state is SessionState.COMPLETED and first.reconciled is True
    assert (first.card_id, first.user_id, first.source) == (card.id, user["id"], SessionSource.RFID)
    assert first.started_at == dt.datetime.fromtimestamp(start_ms // 1000, dt.UTC)
    assert first.meter_start_wh == 500.0 and first.cost_cents == 120
    effects = records.apply(
        device, event("charging.started", started(sid, card.uid, 500.0), start_ms)
    )
    assert effects == []
    [done] = records.all_of(device)
    assert (done.state, done.energy_wh, done.cost_cents, done.stop_reason) == (
        SessionState.COMPLETED,
        3000.0,
        120,
        "local",
    )


def test_a_late_event_marks_the_session_reconciled(records: Records) -> None:
    device = records.device()
    sid, late = charger_id(), charger_id()
    records.apply(device, event("charging.started", started(sid)))
    records.apply(device, event("charging.stopped", stopped(sid, 10.0, 5)))
    old = now_ms() - 61_000
    records.apply(device, event("charging.started", started(late), old - 5000))
    records.apply(device, event("charging.stopped", stopped(late, 10.0, 5), old))
    assert records.session(device, sid).reconciled is False
    assert records.session(device, late).reconciled is True


def test_stop_without_energy_is_derived_from_the_registers(records: Records) -> None:
    device = records.device()
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid, meter=2000.0)))
    data = {"session": sid, "connector": 1, "meter_stop_wh": 2500.0, "reason": "EVDisconnected"}
    records.apply(device, event("charging.stopped", data))
    done = records.session(device, sid)
    assert (done.energy_wh, done.stop_reason, done.charger_reason) == (
        500.0,
        "ev_disconnected",
        "EVDisconnected",
    )
    assert done.cost_cents is None and done.tariff_id is None  # no tariff: no cost


def test_a_start_without_a_meter_value_takes_the_first_one(records: Records) -> None:
    # Issue 13 on the contract's events: charging.started without meter_start_wh, then the
    # first meter value (charging.meter_start, sent twice, then a later value), then a stop
    # with its register only.
    device = records.device()
    records.tariff("0.2500")
    sid = charger_id()
    records.apply(device, event("charging.started", {"session": sid, "connector": 1}))
    assert records.session(device, sid).meter_start_wh is None
    first = event("charging.meter_start", {"session": sid, "connector": 1, "meter_start_wh": 2500})
    for ev in (first, first):
        assert records.apply(device, ev) == []
    later = {"session": sid, "connector": 1, "meter_start_wh": 3000}
    records.apply(device, event("charging.meter_start", later))
    assert records.session(device, sid).meter_start_wh == 2500.0
    stop = {"session": sid, "connector": 1, "meter_stop_wh": 4000.0, "reason": "local"}
    records.apply(device, event("charging.stopped", stop))
    done = records.session(device, sid)
    assert (done.meter_start_wh, done.meter_stop_wh, done.energy_wh, done.cost_cents) == (
        2500.0,
        4000.0,
        1500.0,
        38,  # 1.5 kWh at 0.25: 37.5 cents, rounded to whole cents
    )
    # After the stop, a late first value changes nothing either.
    records.apply(device, event("charging.meter_start", {"session": sid, "meter_start_wh": 1}))
    assert records.session(device, sid).meter_start_wh == 2500.0


def test_a_stop_brings_the_start_the_record_lacks(records: Records) -> None:
    # The first value reached the cloud only in the stop (its charging.meter_start came
    # after the stop, or never): the record takes it from there, and keeps its own otherwise.
    device = records.device()
    sid, other = charger_id(), charger_id()
    records.apply(device, event("charging.started", {"session": sid, "connector": 1}))
    stop = {"session": sid, "meter_start_wh": 2500.0, "meter_stop_wh": 4000.0, "reason": "local"}
    records.apply(device, event("charging.stopped", stop))
    done = records.session(device, sid)
    assert (done.meter_start_wh, done.energy_wh) == (2500.0, 1500.0)
    records.apply(device, event("charging.started", started(other, meter=2000.0)))
    records.apply(device, event("charging.stopped", {**stop, "session": other}))
    kept = records.session(device, other)
    assert (kept.meter_start_wh, kept.energy_wh) == (2000.0, 2000.0)


def test_a_meter_start_needs_its_value(records: Records) -> None:
    with pytest.raises(events.MalformedEventError) as caught:
        records.apply(records.device(), event("charging.meter_start", {"session": "s-1"}))
    assert caught.value.field == "data.meter_start_wh"


def test_the_bridge_passes_the_ocpp_reason_along(records: Records) -> None:
    device = records.device()
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid)))
    more = {"ocpp_reason": "GroundFault"}
    records.apply(device, event("charging.stopped", stopped(sid, 1.0, 1, "fault", **more)))
    done = records.session(device, sid)
    assert (done.stop_reason, done.charger_reason) == ("fault", "GroundFault")


def test_a_refused_attempt_is_recorded_once(records: Records) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    card = records.card(user["id"], enabled=False)
    refused = event(
        "authorization.refused", {"id_tag": card.uid, "connector": 1, "reason": "blocked"}
    )
    unknown = event(
        "authorization.refused", {"id_tag": "CAFE0001", "connector": 1, "reason": "unknown"}
    )
    for ev in (refused, refused, unknown):
        records.apply(device, ev)
    attempts = sorted(records.all_of(device), key=lambda s: s.charger_reason or "")
    assert [(a.state, a.id_tag, a.card_id, a.user_id, a.charger_reason) for a in attempts] == [
        (SessionState.REFUSED, card.uid, card.id, user["id"], "blocked"),
        (SessionState.REFUSED, "CAFE0001", None, None, "unknown"),
    ]
    assert all(a.energy_wh == 0 and a.cost_cents is None for a in attempts)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"connector": 1}, "data.session"),
        ({"session": "", "connector": 1}, "data.session"),
        ({"session": "x" * 65}, "data.session"),
        ({"session": "a", "connector": 0}, "data.connector"),
        ({"session": "a", "connector": True}, "data.connector"),
        ({"session": "a", "meter_start_wh": -1}, "data.meter_start_wh"),
        ({"session": "a", "meter_start_wh": "12"}, "data.meter_start_wh"),
        ({"session": "a", "id_tag": 1234}, "data.id_tag"),
    ],
)
def test_malformed_charging_data_is_refused_naming_the_field(
    records: Records, data: dict[str, Any], field: str
) -> None:
    device = records.device()
    with pytest.raises(events.MalformedEventError) as refused:
        records.apply(device, event("charging.started", data))
    assert refused.value.field == field
    assert records.all_of(device) == []


def test_other_events_are_no_business_of_the_service(records: Records) -> None:
    device = records.device()
    assert records.apply(device, event("overtemp", {"temp_c": 81})) == []
    assert records.all_of(device) == []


# -- tariffs -------------------------------------------------------------------------------------
def test_the_most_specific_tariff_prices_the_session_in_the_sites_local_time(
    records: Records,
) -> None:
    site = records.site("Europe/Berlin")
    device = records.device(site_id=site)
    other = records.device(site_id=site)
    lone = records.device()
    records.tariff("0.5000")  # the organization's
    night = [{"start": "22:00", "end": "06:00", "price_per_kwh": "0.1000"}]
    site_tariff = records.tariff("0.3000", night, site_id=site)
    device_tariff = records.tariff("0.2000", device_id=device.id)
    # 20:30-21:30 UTC in June is 22:30-23:30 in Berlin: all night.
    ts = int(dt.datetime(2026, 6, 1, 21, 30, tzinfo=dt.UTC).timestamp() * 1000)
    priced = {}
    for d in (device, other, lone):
        sid = charger_id()
        records.apply(d, event("charging.started", started(sid), ts - 3_600_000))
        records.apply(d, event("charging.stopped", stopped(sid, 10_000.0, 3600), ts))
        done = records.session(d, sid)
        priced[d.id] = (done.tariff_id, done.cost_cents)
    assert priced[device.id] == (device_tariff, 200)  # 10 kWh x 0.20
    assert priced[other.id] == (site_tariff, 100)  # 10 kWh at the site's night price
    assert priced[lone.id][1] == 500


# -- stop requests and failed starts -------------------------------------------------------------
def test_a_stop_request_is_recorded_without_ending_the_session(records: Records) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    other, _ = records.tenant.user("owner")
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid)))
    record = records.session(device, sid)
    at = utcnow()
    for who in (user, other):  # the first request is kept
        with records.db.transaction() as s:
            sessions.request_stop(
                s, s.get(ChargingSession, record.id), user_principal(who, records.tenant.id), at
            )  # type: ignore[arg-type]
    asked = records.session(device, sid)
    assert asked.state is SessionState.ACTIVE
    assert (asked.stop_requested_by, asked.stop_requested_at) == (f"user:{user['id']}", at)
    records.apply(device, event("charging.stopped", stopped(sid, 1.0, 1)))
    with pytest.raises(sessions.SessionNotActiveError), records.db.transaction() as s:
        sessions.request_stop(
            s, s.get(ChargingSession, record.id), user_principal(user, records.tenant.id), at
        )  # type: ignore[arg-type]


def test_failed_start_commands_fail_their_request_which_a_late_start_still_fills(
    records: Records,
) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    who = user_principal(user, records.tenant.id)
    with records.db.transaction() as s:
        d = s.get(Device, device.id)
        assert d is not None
        rejected, command = sessions.request_start(
            s, d, 1, SessionSource.APP, who, dt.timedelta(minutes=5)
        )
        waiting, _ = sessions.request_start(
            s, d, 1, SessionSource.GUEST, who, dt.timedelta(minutes=5)
        )
        fresh, _ = sessions.request_start(s, d, 1, SessionSource.APP, who, dt.timedelta(minutes=5))
        command.state, command.reason = CommandState.REJECTED, "connector_occupied"
        ids = rejected.id, waiting.id, fresh.id, waiting.id_tag
    with records.db.transaction() as s:
        s.execute(
            update(ChargingSession)
            .where(ChargingSession.id == ids[1])
            .values(created_at=utcnow() - dt.timedelta(minutes=10))
        )
    with records.db.transaction() as s:
        failed = sessions.fail_unstarted(s, utcnow(), dt.timedelta(minutes=5))
    assert set(failed) >= {ids[0], ids[1]} and ids[2] not in failed
    with records.db.transaction() as s:
        states = {i: s.get(ChargingSession, i).state for i in ids[:3]}  # type: ignore[union-attr]
        assert s.get(ChargingSession, ids[0]).charger_reason == "connector_occupied"  # type: ignore[union-attr]
    assert states == {
        ids[0]: SessionState.FAILED,
        ids[1]: SessionState.FAILED,
        ids[2]: SessionState.REQUESTED,
    }
    # The EV was plugged in late after all: the guest's start fills the failed request.
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid, ids[3])))
    late = records.session(device, sid)
    assert (late.id, late.state, late.source) == (ids[1], SessionState.ACTIVE, SessionSource.GUEST)


# -- concurrency -------------------------------------------------------------------------------
def offline_worker(app: Flask, tmp_path: Path) -> ChargingWorker:
    """A charging worker that is never connected: ``handle`` is its whole pipeline (decode,
    apply in a transaction, retry on database errors and concurrent changes)."""
    endpoint = Endpoint("127.0.0.1", 9, False, "nobody", "nothing")
    return ChargingWorker(
        get_database(app), endpoint, "offline-" + secrets.token_hex(3), tmp_path, False
    )


def race(*actions: Callable[[], Any]) -> list[Any]:
    """Run the actions at once on their own threads; their results (or exceptions)."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(i: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = action()
        except Exception as exc:  # reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("attempt", range(3))
def test_one_stop_delivered_twice_at_once_completes_the_session_once(
    records: Records, tmp_path: Path, attempt: int
) -> None:
    device = records.device()
    records.tariff("0.3000")
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid)))
    topic = contract.topic(device.id, contract.EVENTS)
    stop = payload("charging.stopped", stopped(sid, 5000.0, 1200, "ev_disconnected"))
    one, two = offline_worker(records.app, tmp_path), offline_worker(records.app, tmp_path)
    outcomes = race(lambda: one.handle(topic, stop), lambda: two.handle(topic, stop))
    assert outcomes == ["applied", "applied"]  # both acknowledge; one of them changed the row
    [done] = records.all_of(device)
    assert (done.state, done.energy_wh, done.cost_cents) == (SessionState.COMPLETED, 5000.0, 150)
    with records.db.transaction() as s:
        assert (
            s.scalars(select(DeviceCommand).where(DeviceCommand.device_id == device.id)).all() == []
        )


@pytest.mark.parametrize("attempt", range(3))
def test_a_stop_before_start_delivered_twice_at_once_makes_one_record(
    records: Records, tmp_path: Path, attempt: int
) -> None:
    device = records.device()
    records.tariff("0.3000")
    sid = charger_id()
    topic = contract.topic(device.id, contract.EVENTS)
    stop = payload("charging.stopped", stopped(sid, 5000.0, 1200, "local"))
    start = payload("charging.started", started(sid))
    workers = [offline_worker(records.app, tmp_path) for _ in range(3)]
    outcomes = race(
        lambda: workers[0].handle(topic, stop),
        lambda: workers[1].handle(topic, stop),
        lambda: workers[2].handle(topic, start),
    )
    assert outcomes == ["applied"] * 3
    [done] = records.all_of(device)
    assert (done.state, done.energy_wh, done.cost_cents) == (SessionState.COMPLETED, 5000.0, 150)


@pytest.mark.parametrize("attempt", range(3))
def test_an_api_stop_and_the_chargers_stop_at_once_leave_one_stop(
    records: Records, tmp_path: Path, attempt: int
) -> None:
    device = records.device()
    user, _ = records.tenant.user("owner")
    records.tariff("0.3000")
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid)))
    record = records.session(device, sid)
    topic = contract.topic(device.id, contract.EVENTS)
    stop = payload("charging.stopped", stopped(sid, 2000.0, 600, "local"))
    worker = offline_worker(records.app, tmp_path)

    def api_stop() -> str:
        with records.db.transaction() as s:
            found = s.get(ChargingSession, record.id)
            assert found is not None
            try:
                sessions.request_stop(s, found, user_principal(user, records.tenant.id), utcnow())
            except sessions.SessionNotActiveError:
                return "409"
            return "202"

    api, charger = race(api_stop, lambda: worker.handle(topic, stop))
    assert api in ("202", "409") and charger == "applied"
    [done] = records.all_of(device)
    assert (done.state, done.stop_reason, done.cost_cents) == (SessionState.COMPLETED, "local", 60)
    assert done.stop_requested_by in (None, f"user:{user['id']}")
    assert (done.stop_requested_by is not None) == (api == "202")
