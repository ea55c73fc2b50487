"""The charging worker on real brokers (embedded amqtt and Mosquitto, the ``link`` fixture):
chargers publish contract 14 events on ``af/{id}/events`` as a charger would; the worker builds
the sessions, stops a session whose card the cloud refuses with a ``charging.stop`` the charger
receives, counts and skips malformed events, loses nothing while the database fails, and
republishes the authorization lists of chargers whose guest windows opened or closed."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from cloud.access.models import RfidCard
from cloud.charging.models import ChargingSession, SessionState
from cloud.charging.worker import ChargingWorker
from cloud.db import get_database, utcnow
from cloud.identity.grants import AccessLevel, ChargerAccess
from firmware.core import contract
from tests.charging.test_sessions import now_ms, started, stopped
from tests.link import Link, running_worker

TIMEOUT = 20.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll until ``condition`` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Charger:
    """A device on the broker, publishing events with its own seq as firmware does."""

    def __init__(self, link: Link) -> None:
        self.id, password = link.device()
        self.mqtt = link.mqtt(self.id, password).connected()
        self.seq = 0
        assert not self.mqtt.subscribe(contract.topic(self.id, contract.CMD)).is_failure

    def publish(self, kind: str, data: dict[str, Any], ts: int | None = None) -> None:
        self.seq += 1
        payload = contract.encode_event(ts or now_ms(), self.seq, kind, "info", data)
        self.mqtt.publish(contract.topic(self.id, contract.EVENTS), payload)

    def publish_raw(self, payload: bytes) -> None:
        self.mqtt.publish(contract.topic(self.id, contract.EVENTS), payload)

    def command(self) -> contract.Command:
        """The next command on ``af/{id}/cmd`` (waits up to 20 s)."""
        while True:
            message = self.mqtt.expect(TIMEOUT)
            if message.topic == contract.topic(self.id, contract.CMD):
                return contract.decode_command(message.payload)


def sessions_of(link: Link, device_id: str) -> list[ChargingSession]:
    with get_database(link.app).transaction() as s:
        found = list(
            s.scalars(select(ChargingSession).where(ChargingSession.device_id == device_id))
        )
        for row in found:
            s.expunge(row)
        return found


def completed(link: Link, device_id: str, count: int = 1) -> list[ChargingSession]:
    def done() -> list[ChargingSession] | None:
        found = sessions_of(link, device_id)
        finished = [s for s in found if s.state is SessionState.COMPLETED]
        return found if len(finished) >= count else None

    found: list[ChargingSession] = wait_for(done, f"{count} completed sessions of {device_id}")
    return found


@contextlib.contextmanager
def running_charging_worker(link: Link, data_dir: Path, **options: Any) -> Iterator[ChargingWorker]:
    """A charging worker on ``link``'s broker, subscribed; its periodic round waits an hour
    (tests call ``refresh`` themselves)."""
    options.setdefault("refresh_interval", 3600)
    with running_worker(link, ChargingWorker, "charging", data_dir, **options) as worker:
        _wait_subscribed(link, worker)
        yield worker


def _wait_subscribed(link: Link, worker: ChargingWorker) -> None:
    """Publish a harmless event until the worker has seen one: its subscription is in place."""
    probe = Charger(link)
    try:
        deadline = time.monotonic() + TIMEOUT
        while worker.ignored == 0:
            assert time.monotonic() < deadline, "the charging worker never received an event"
            probe.publish("probe", {})
            with contextlib.suppress(AssertionError):
                wait_for(lambda: worker.ignored > 0, "a probe", timeout=1.0)
    finally:
        probe.mqtt.close()


@pytest.fixture
def worker(link: Link, tmp_path: Path) -> Iterator[ChargingWorker]:
    with running_charging_worker(link, tmp_path, max_retry_delay=0.5) as running:
        yield running


@pytest.fixture
def charger(link: Link) -> Iterator[Charger]:
    made = Charger(link)
    yield made
    made.mqtt.close()


def test_a_chargers_session_becomes_a_record(
    link: Link, worker: ChargingWorker, charger: Charger
) -> None:
    sid = "tx-" + secrets.token_hex(4)
    charger.publish("charging.started", started(sid, meter=12_000.0))
    running = wait_for(
        lambda: [s for s in sessions_of(link, charger.id) if s.state is SessionState.ACTIVE],
        "the active session",
    )
    assert running[0].charger_session_id == sid and running[0].source.value == "free"
    charger.publish(
        "charging.stopped", stopped(sid, 11_000.0, 5400, "ev_disconnected", meter_start=12_000.0)
    )
    [done] = completed(link, charger.id)
    assert (done.energy_wh, done.meter_stop_wh, done.duration_s, done.stop_reason) == (
        11_000.0,
        23_000.0,
        5400,
        "ev_disconnected",
    )


def test_a_card_the_cloud_refuses_gets_its_session_stopped(
    link: Link, worker: ChargingWorker, charger: Charger
) -> None:
    user, _ = link.tenant.user("owner")
    uid = secrets.token_hex(4).upper()
    with get_database(link.app).transaction() as s:
        s.add(RfidCard(organization_id=link.tenant.id, uid=uid, user_id=user["id"], enabled=False))
    sid = "tx-" + secrets.token_hex(4)
    charger.publish("charging.started", started(sid, uid))
    command = charger.command()
    assert (command.name, command.args) == ("charging.stop", {"connector": 1})
    assert command.expires is not None and command.expires > now_ms()
    # The charger obeys, as contract 14 says: reason remote; the record says card_refused.
    charger.mqtt.publish(
        contract.topic(charger.id, contract.CMD_RESULT),
        contract.encode_command_result(command.id, "ok"),
    )
    charger.publish("charging.stopped", stopped(sid, 50.0, 30, "remote", uid))
    [done] = completed(link, charger.id)
    assert (done.stop_reason, done.user_id, done.card_id is not None) == (
        "card_refused",
        user["id"],
        True,
    )


def test_an_offline_session_replayed_out_of_order_is_recorded_once(
    link: Link, worker: ChargingWorker, charger: Charger
) -> None:
    sid = "tx-" + secrets.token_hex(4)
    stop_ms = now_ms() - 3600_000
    start_ms = stop_ms - 600_000
    # The replay after reconnecting, twice over (a QoS 1 redelivery), stop before start.
    for _ in range(2):
        charger.publish("charging.stopped", stopped(sid, 900.0, 600, "local"), stop_ms)
        charger.publish("charging.started", started(sid), start_ms)
    charger.publish("overtemp", {"temp_c": 80})
    wait_for(lambda: worker.applied >= 4, "the four charging events")
    [done] = completed(link, charger.id)
    assert done.reconciled is True and done.energy_wh == 900.0 and done.stop_reason == "local"
    assert done.started_at == dt.datetime.fromtimestamp(start_ms // 1000, dt.UTC)


def test_malformed_events_are_counted_and_the_worker_goes_on(
    link: Link, worker: ChargingWorker, charger: Charger, tmp_path: Path
) -> None:
    charger.publish("charging.started", {"connector": 1})  # no session
    charger.publish("charging.stopped", {"session": "x", "energy_wh": -5})
    charger.publish_raw(b'{"v":1,"ts":1,"seq":1,"type":"charging.started"}')  # no severity
    charger.publish_raw(b"\xff\xfe")
    sid = "tx-" + secrets.token_hex(4)
    charger.publish("charging.started", started(sid))
    charger.publish("charging.stopped", stopped(sid, 1.0, 1))
    completed(link, charger.id)
    wait_for(lambda: sum(worker.rejects.counts.values()) >= 4, "four rejections")
    assert worker.rejects.counts.get("bad_value", 0) >= 2
    # Kept, with the field at fault, where an operator can read why.
    assert '"field": "data.session"' in (tmp_path / "rejected.jsonl").read_text()


def test_no_event_is_lost_while_the_database_fails(
    link: Link, worker: ChargingWorker, charger: Charger
) -> None:
    engine = get_database(link.app).engine
    sid = "tx-" + secrets.token_hex(4)
    charger.publish("charging.started", started(sid))
    wait_for(lambda: sessions_of(link, charger.id), "the started session")
    with engine.begin() as conn:  # the table vanishes: every write of the worker fails
        conn.execute(text("ALTER TABLE charging_sessions RENAME TO charging_sessions_away"))
    try:
        before = worker.db_retries
        charger.publish("charging.stopped", stopped(sid, 4200.0, 900, "local"))
        wait_for(lambda: worker.db_retries >= before + 3, "the worker retrying")
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE charging_sessions_away RENAME TO charging_sessions"))
    [done] = completed(link, charger.id)
    assert (done.energy_wh, done.stop_reason) == (4200.0, "local")


def test_guest_windows_that_open_or_close_republish_the_chargers_list(
    link: Link, worker: ChargingWorker, charger: Charger
) -> None:
    guest, _ = link.tenant.user()
    uid = secrets.token_hex(4).upper()
    now = utcnow()
    opens, closes = now - dt.timedelta(minutes=5), now + dt.timedelta(hours=1)
    with get_database(link.app).transaction() as s:
        s.add(RfidCard(organization_id=link.tenant.id, uid=uid, user_id=guest["id"]))
        s.add(
            ChargerAccess(
                device_id=charger.id,
                user_id=guest["id"],
                level=AccessLevel.GUEST,
                valid_from=opens,
                valid_until=closes,
            )
        )
    assert not charger.mqtt.subscribe(contract.topic(charger.id, contract.AUTH_LIST)).is_failure

    def listed() -> contract.AuthList:
        while True:
            message = charger.mqtt.expect(TIMEOUT)
            if message.topic == contract.topic(charger.id, contract.AUTH_LIST):
                return contract.decode_auth_list(message.payload)

    assert charger.id in worker.refresh(now)["auth_lists"]
    first = listed()
    assert first.tokens == {uid: int(closes.timestamp() * 1000)}
    later = closes + dt.timedelta(minutes=1)
    assert charger.id in worker.refresh(later)["auth_lists"]
    second = listed()
    assert second.version > first.version and second.tokens == {}
    # Nothing moved since: nothing is published again.
    assert charger.id not in worker.refresh(later + dt.timedelta(minutes=1))["auth_lists"]
