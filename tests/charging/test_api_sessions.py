"""The sessions API: start from the app, stop, read, list; who sees and stops which sessions
(operators and owners every session of a charger, a guest their own, another tenant nothing);
on SQLite and MariaDB. End to end on real brokers: the app's start and stop reach a charger as
commands, and its events, applied by the charging worker, turn into one complete record."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from cloud.charging import sessions
from cloud.charging.models import ChargingSession, SessionState
from cloud.commands.publisher import MqttCommandPublisher
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from firmware.core import contract
from tests.charging.test_sessions import (
    Records,
    charger_id,
    event,
    offline_worker,
    payload,
    race,
    started,
    stopped,
)
from tests.charging.test_worker import Charger, completed, running_charging_worker, wait_for
from tests.helpers import Client, Tenant
from tests.link import Link

PUBLISHER = "ampfleet.command_publisher"
OCPP = {"hardware_family": "ocpp-generic", "protocol": "ocpp"}  # up to 32 connectors


class Unreachable:
    """A publisher whose broker is down: the API keeps its commands unsent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def send_command(
        self, device_id: str, _id: str, name: str, args: dict[str, Any], _e: int
    ) -> bool:
        self.sent.append((device_id, name, args))
        return False


@pytest.fixture
def unreachable(app: Flask) -> Iterator[Unreachable]:
    previous = app.extensions.get(PUBLISHER)
    app.extensions[PUBLISHER] = publisher = Unreachable()
    yield publisher
    app.extensions[PUBLISHER] = previous


@pytest.fixture
def records(app: Flask, tenant: Tenant, unreachable: Unreachable) -> Records:
    return Records(app, tenant)


def grant(
    records: Records, device_id: str, user_id: int, level: AccessLevel, **window: Any
) -> None:
    with records.db.transaction() as s:
        s.add(ChargerAccess(device_id=device_id, user_id=user_id, level=level, **window))


def running(records: Records, device_id: str, user_id: int | None = None) -> ChargingSession:
    """An active session on the charger (started by the charger itself), owned by ``user_id``."""
    sid = charger_id()
    with records.db.transaction() as s:
        device = s.get(Device, device_id)
        assert device is not None
        sessions.apply_event(s, device, event("charging.started", started(sid)), utcnow())
        record = s.scalar(select(ChargingSession).where(ChargingSession.charger_session_id == sid))
        assert record is not None
        record.user_id = user_id
        s.flush()
        s.expunge(record)
        return record


def test_starting_from_the_app_requests_a_session_and_sends_charging_start(
    records: Records, unreachable: Unreachable
) -> None:
    device = records.tenant.device(state="active", **OCPP)
    user, owner = records.tenant.user("owner")
    response = owner.post(f"/devices/{device['id']}/sessions", json={"connector": 1})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["state"], body["source"], body["user_id"], body["connector"]) == (
        "requested",
        "app",
        user["id"],
        1,
    )
    tag = body["id_tag"]
    assert tag.startswith("app-") and len(tag) <= 20
    assert body["_links"]["self"]["href"].endswith(f"/sessions/{body['id']}")
    assert body["_links"]["stop"]["href"].endswith(f"/sessions/{body['id']}/stop")
    assert unreachable.sent == [(device["id"], "charging.start", {"connector": 1, "id_tag": tag})]
    command = owner.get(body["_links"]["command"]["href"]).get_json()
    assert (command["name"], command["sent"], command["args"]["id_tag"]) == (
        "charging.start",
        False,
        tag,
    )
    assert owner.get(f"/sessions/{body['id']}").get_json()["state"] == "requested"
    # While it is being started, the connector is busy; the other one is not.
    again = owner.post(f"/devices/{device['id']}/sessions", json={"connector": 1})
    assert again.status_code == 409 and "connector" in again.get_json()["errors"]["json"]
    assert owner.post(f"/devices/{device['id']}/sessions", json={"connector": 2}).status_code == 202


def test_a_running_session_makes_its_connector_busy(records: Records) -> None:
    device = records.device()
    running(records, device.id)
    _, operator = records.tenant.user("operator")
    refused = operator.post(f"/devices/{device.id}/sessions", json={})
    assert refused.status_code == 409
    assert refused.get_json()["errors"]["json"]["connector"] == [
        "a session is already running on connector 1"
    ]


@pytest.mark.parametrize(
    "body", [{"connector": 0}, {"connector": 33}, {"connector": "1"}, {"connector": None}, {"x": 1}]
)
def test_a_bad_start_request_names_the_field(records: Records, body: dict[str, Any]) -> None:
    device = records.tenant.device(state="active")
    _, owner = records.tenant.user("owner")
    response = owner.post(f"/devices/{device['id']}/sessions", json=body)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]["json"]) == set(body)


def test_a_connector_the_charger_does_not_have_is_refused(records: Records) -> None:
    device = records.tenant.device(state="active")  # ac22-3p: one connector
    _, owner = records.tenant.user("owner")
    response = owner.post(f"/devices/{device['id']}/sessions", json={"connector": 2})
    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == {
        "connector": ["this charger has connectors 1 to 1"]
    }


def test_permissions_and_tenants(records: Records, other_tenant: Tenant) -> None:
    device = records.tenant.device(state="active")
    theirs = other_tenant.device(state="active")
    _, support = records.tenant.user("support")  # reads everything, charges nothing
    _, installer = records.tenant.user("installer")
    _, owner = records.tenant.user("owner")
    assert support.post(f"/devices/{device['id']}/sessions", json={}).status_code == 403
    assert installer.get(f"/devices/{device['id']}/sessions").status_code == 403
    assert owner.post(f"/devices/{theirs['id']}/sessions", json={}).status_code == 404
    assert owner.get(f"/devices/{theirs['id']}/sessions").status_code == 404
    assert owner.get("/devices/no-such-charger/sessions").status_code == 404
    foreign = running(Records(records.app, other_tenant), theirs["id"])
    assert owner.get(f"/sessions/{foreign.id}").status_code == 404
    assert owner.post(f"/sessions/{foreign.id}/stop").status_code == 404
    assert support.post(f"/sessions/{foreign.id}/stop").status_code == 403  # no charging:stop
    assert owner.get(f"/sessions/{'f' * 32}").status_code == 404
    assert support.get(f"/devices/{device['id']}/sessions").status_code == 200


def test_stopping_records_who_asked_and_sends_charging_stop(
    records: Records, unreachable: Unreachable
) -> None:
    device = records.device()
    record = running(records, device.id)
    user, operator = records.tenant.user("operator")
    response = operator.post(f"/sessions/{record.id}/stop")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["state"] == "active" and body["stop_requested_by"] == f"user:{user['id']}"
    assert unreachable.sent == [(device.id, "charging.stop", {"connector": 1})]
    # Only the charger's charging.stopped ends it; after that, stopping is a conflict.
    records.apply(
        device, event("charging.stopped", stopped(record.charger_session_id or "", 10.0, 5))
    )
    done = operator.post(f"/sessions/{record.id}/stop")
    assert done.status_code == 409
    assert "completed" in done.get_json()["message"] and "state" in done.get_json()["errors"]
    got = operator.get(f"/sessions/{record.id}").get_json()
    assert (got["state"], got["stop_reason"], got["stop_requested_by"]) == (
        "completed",
        "remote",
        f"user:{user['id']}",
    )


def test_a_requested_session_cannot_be_stopped(records: Records) -> None:
    device = records.tenant.device(state="active")
    _, owner = records.tenant.user("owner")
    requested = owner.post(f"/devices/{device['id']}/sessions", json={}).get_json()
    refused = owner.post(f"/sessions/{requested['id']}/stop")
    assert refused.status_code == 409 and "requested" in refused.get_json()["message"]


def test_a_guest_starts_sees_and_stops_only_their_own_sessions(records: Records) -> None:
    device = records.device(**OCPP)
    other_device = records.device()
    guest, guest_client = records.tenant.user()
    owner, owner_client = records.tenant.user()
    now = utcnow()
    grant(
        records,
        device.id,
        guest["id"],
        AccessLevel.GUEST,
        valid_from=now - dt.timedelta(hours=1),
        valid_until=now + dt.timedelta(hours=1),
    )
    grant(records, device.id, owner["id"], AccessLevel.OWNER)
    someone_elses = running(records, device.id, owner["id"])

    response = guest_client.post(f"/devices/{device.id}/sessions", json={"connector": 2})
    assert response.status_code == 202, response.get_json()
    mine = response.get_json()
    assert (mine["source"], mine["user_id"]) == ("guest", guest["id"])
    listed = guest_client.get(f"/devices/{device.id}/sessions").get_json()
    assert [s["id"] for s in listed] == [mine["id"]]
    assert guest_client.get(f"/sessions/{someone_elses.id}").status_code == 404
    assert guest_client.post(f"/sessions/{someone_elses.id}/stop").status_code == 404
    assert guest_client.post(f"/devices/{other_device.id}/sessions", json={}).status_code == 404
    # The owner sees every session of the charger and may stop the guest's.
    owned = owner_client.get(f"/devices/{device.id}/sessions").get_json()
    assert {s["id"] for s in owned} == {mine["id"], someone_elses.id}
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid, mine["id_tag"], connector=2)))
    assert owner_client.post(f"/sessions/{mine['id']}/stop").status_code == 202
    assert guest_client.get(f"/sessions/{mine['id']}").get_json()["state"] == "active"


def test_a_guest_outside_the_window_cannot_start(records: Records) -> None:
    device = records.device()
    guest, client = records.tenant.user()
    now = utcnow()
    grant(
        records,
        device.id,
        guest["id"],
        AccessLevel.GUEST,
        valid_from=now + dt.timedelta(hours=1),
        valid_until=now + dt.timedelta(hours=2),
    )
    assert client.post(f"/devices/{device.id}/sessions", json={}).status_code in (403, 404)


def test_the_list_is_paginated_newest_first_and_filtered(records: Records) -> None:
    device = records.device()
    made = []
    for _ in range(3):
        record = running(records, device.id)
        records.apply(
            device, event("charging.stopped", stopped(record.charger_session_id or "", 1.0, 1))
        )
        made.append(record.id)
    with records.db.transaction() as s:  # distinct creation times, oldest first
        for n, session_id in enumerate(made):
            row = s.get(ChargingSession, session_id)
            assert row is not None
            row.created_at = utcnow() - dt.timedelta(minutes=10 - n)
    active = running(records, device.id)
    _, operator = records.tenant.user("operator")
    page = operator.get(f"/devices/{device.id}/sessions", query_string={"page_size": 2})
    assert page.status_code == 200 and 'rel="next"' in page.headers["Link"]
    assert [s["id"] for s in page.get_json()] == [active.id, made[2]]
    done = operator.get(f"/devices/{device.id}/sessions", query_string={"state": "completed"})
    assert [s["id"] for s in done.get_json()] == list(reversed(made))
    bad = operator.get(f"/devices/{device.id}/sessions", query_string={"state": "paused"})
    assert bad.status_code == 422 and "state" in bad.get_json()["errors"]["query"]


@pytest.mark.parametrize("attempt", range(3))
def test_an_api_stop_racing_the_chargers_stop_leaves_one_stop(
    records: Records, tmp_path: Path, attempt: int
) -> None:
    device = records.device()
    records.tariff("0.3000")
    record = running(records, device.id)
    _, operator = records.tenant.user("operator")
    worker = offline_worker(records.app, tmp_path)
    topic = contract.topic(device.id, contract.EVENTS)
    stop = payload(
        "charging.stopped", stopped(record.charger_session_id or "", 3000.0, 900, "local")
    )
    api, charger = race(
        lambda: operator.post(f"/sessions/{record.id}/stop").status_code,
        lambda: worker.handle(topic, stop),
    )
    assert api in (202, 409) and charger == "applied"
    [done] = records.all_of(device)
    assert (done.state, done.stop_reason, done.cost_cents) == (SessionState.COMPLETED, "local", 90)


# -- end to end on real brokers ---------------------------------------------------------------
@pytest.fixture
def live_publisher(link: Link) -> Iterator[None]:
    previous = link.app.extensions.get(PUBLISHER)
    link.app.extensions[PUBLISHER] = MqttCommandPublisher(link.endpoint())
    yield
    link.app.extensions[PUBLISHER] = previous


def test_app_start_and_stop_end_to_end(link: Link, tmp_path: Path, live_publisher: None) -> None:
    charger = Charger(link)
    _, owner = link.tenant.user("owner")
    with running_charging_worker(link, tmp_path):
        response = owner.post(f"/devices/{charger.id}/sessions", json={"connector": 1})
        assert response.status_code == 202, response.get_json()
        requested = response.get_json()
        assert requested["state"] == "requested"
        start = charger.command()
        assert (start.name, start.args) == (
            "charging.start",
            {"connector": 1, "id_tag": requested["id_tag"]},
        )
        sid = "tx-" + secrets.token_hex(4)
        charger.publish("charging.started", started(sid, start.args["id_tag"], meter=500.0))
        wait_for(
            lambda: owner.get(f"/sessions/{requested['id']}").get_json()["state"] == "active",
            "active",
        )

        assert owner.post(f"/sessions/{requested['id']}/stop").status_code == 202
        stop = charger.command()
        assert (stop.name, stop.args) == ("charging.stop", {"connector": 1})
        charger.publish(
            "charging.stopped", stopped(sid, 2500.0, 1200, "remote", start.args["id_tag"], 500.0)
        )
        [done] = completed(link, charger.id)
    body = owner.get(f"/sessions/{requested['id']}").get_json()
    assert (body["state"], body["energy_wh"], body["stop_reason"], body["charger_session_id"]) == (
        "completed",
        2500.0,
        "remote",
        sid,
    )
    assert body["stop_requested_by"] is not None and done.id == requested["id"]
    charger.mqtt.close()


def test_every_sessions_route_needs_a_token(client: Client) -> None:
    for method, path in [
        ("GET", "/devices/x/sessions"),
        ("POST", "/devices/x/sessions"),
        ("GET", "/devices/x/sessions/live"),
        ("GET", f"/sessions/{'a' * 32}"),
        ("POST", f"/sessions/{'a' * 32}/stop"),
        ("GET", "/tariffs"),
    ]:
        assert client.request(method, path).status_code == 401
