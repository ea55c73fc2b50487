"""What the bridges read from the records and what a bridge's will changes there
(``cloud.ocpp.records``, ``cloud.ocpp.bridges``), on SQLite and MariaDB."""

from __future__ import annotations

import datetime as dt

from flask import Flask

from cloud.commands.models import CommandState, DeviceCommand
from cloud.commands.service import request_command
from cloud.db import get_database, utcnow
from cloud.devices.models import Device, DeviceStatus
from cloud.ocpp.bridges import bridge_id_of, bridge_status
from cloud.ocpp.context import Answers
from cloud.ocpp.models import OcppCharger
from cloud.ocpp.records import REMOTE_TOKEN_TTL, Records
from tests.helpers import Tenant


def charger(tenant: Tenant) -> str:
    """A registered OCPP charger's id."""
    device_id: str = tenant.device(protocol="ocpp", hardware_family="ocpp-generic")["id"]
    return device_id


def command(app: Flask, device_id: str, name: str, args: dict[str, object], ttl_s: int) -> str:
    """A pending command, as the API records it."""
    with get_database(app).transaction() as session:
        device = session.get(Device, device_id)
        assert device is not None
        made = request_command(session, device, name, args, dt.timedelta(seconds=ttl_s), None)
        return made.id


def test_remote_start_tokens_come_from_the_charging_start_commands(
    app: Flask, tenant: Tenant
) -> None:
    device_id, other = charger(tenant), charger(tenant)
    command(app, device_id, "charging.start", {"connector": 1, "id_tag": "app-abc123def456"}, 60)
    command(app, device_id, "reboot", {"mode": "soft", "id_tag": "app-notastart0"}, 60)
    records = Records(get_database(app))
    assert records.remote_start(device_id, "app-abc123def456")
    assert records.remote_start(device_id, "APP-ABC123DEF456")  # id tokens: case-insensitive
    assert not records.remote_start(device_id, "app-notastart0")  # not a charging.start
    assert not records.remote_start(other, "app-abc123def456")  # another charger's start
    later = utcnow() + REMOTE_TOKEN_TTL + dt.timedelta(minutes=1)
    assert not records.remote_start(device_id, "app-abc123def456", now=later)


def test_the_pending_commands_of_a_charger_are_queued_oldest_first(
    app: Flask, tenant: Tenant
) -> None:
    device_id = charger(tenant)
    first = command(app, device_id, "config.get", {}, 60)
    second = command(app, device_id, "reboot", {"mode": "hard"}, 1)
    done = command(app, device_id, "trigger", {"message": "Heartbeat"}, 60)
    with get_database(app).transaction() as session:
        row = session.get(DeviceCommand, done)
        assert row is not None
        row.state = CommandState.SUCCEEDED
    queued = Records(get_database(app)).queued(device_id)
    assert [c.id for c in queued] == [first, second]
    assert queued[1].name == "reboot" and queued[1].args == {"mode": "hard"}
    assert queued[1].expires is not None
    assert queued[1].expired(queued[1].expires) and not queued[0].expired(queued[1].expires)


def test_a_bridge_going_offline_takes_only_its_online_chargers(app: Flask, tenant: Tenant) -> None:
    held, elsewhere, offline = charger(tenant), charger(tenant), charger(tenant)
    bridge = f"ocpp-test-{held}"
    with get_database(app).transaction() as session:
        for device_id, by, online in (
            (held, bridge, True),
            (elsewhere, "another-bridge", True),
            (offline, bridge, False),
        ):
            session.merge(OcppCharger(device_id=device_id, lenient=False, bridge_id=by))
            session.merge(DeviceStatus(device_id=device_id, online=online))
    with get_database(app).transaction() as session:
        assert bridge_status(session, "no-such-bridge", False) is None  # not a bridge
        assert bridge_status(session, bridge, True) == []  # a bridge's online changes nothing
        assert bridge_status(session, bridge, False) == [held]
    with get_database(app).session() as session:
        states = {d: session.get(DeviceStatus, d) for d in (held, elsewhere, offline)}
        assert {d: s.online for d, s in states.items() if s is not None} == {
            held: False,
            elsewhere: True,
            offline: False,
        }


def test_a_bridge_id_is_a_valid_device_id_level() -> None:
    assert bridge_id_of("ampfleet-ocpp-host1.example") == "ampfleet-ocpp-host1.example"
    assert bridge_id_of("ocpp bridge/1+#") == "ocpp-bridge-1--"
    assert bridge_id_of("///") == "ocpp-bridge"


def test_answers_are_remembered_per_charger_up_to_a_limit() -> None:
    answers = Answers(limit=2)
    answers.keep("cp-1", "c-1", b"one")
    answers.keep("cp-2", "c-1", b"two")
    assert answers.get("cp-1", "c-1") == b"one" and answers.get("cp-2", "c-1") == b"two"
    answers.keep("cp-1", "c-2", b"three")
    assert answers.get("cp-1", "c-1") is None  # the oldest went first
