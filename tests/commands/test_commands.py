"""The commands API end to end, on the embedded broker and on Mosquitto: the API judges a
command against the device family's schema and the caller's roles before anything reaches the
device; an accepted one arrives on ``af/{id}/cmd`` with its correlation id, and the config
worker resolves it from the device's ``cmd/result`` answers (docs/device-contract.md 4.5, 4.6)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.commands.publisher import MqttCommandPublisher
from cloud.configuration.worker import ConfigWorker
from cloud.db import utcnow
from firmware.core import contract
from tests.helpers import Client
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link, running_config_worker
from tests.mqtt import Mqtt

PUBLISHER = "ampfleet.command_publisher"


class Unreachable:
    """A publisher whose broker is down: the API keeps the command unsent."""

    def send_command(self, *_args: Any) -> bool:
        return False


@pytest.fixture
def publisher(link: Link) -> Iterator[None]:
    """The API publishes as the service account on ``link``'s broker."""
    previous = link.app.extensions.get(PUBLISHER)
    link.app.extensions[PUBLISHER] = MqttCommandPublisher(endpoint(link))
    yield
    link.app.extensions[PUBLISHER] = previous


@pytest.fixture
def worker(link: Link, tmp_path: Path, publisher: None) -> Iterator[ConfigWorker]:
    """The config worker (which resolves commands too); tests sweep it by hand."""
    with running_config_worker(link, tmp_path) as config_worker:
        yield config_worker


@pytest.fixture
def device(link: Link) -> Iterator[tuple[str, Mqtt]]:
    """A registered ac22-3p device, connected and subscribed to its command topic."""
    device_id, password = link.device()
    client = link.mqtt(device_id, password).connected()
    assert not client.subscribe(contract.topic(device_id, contract.CMD)).is_failure
    yield device_id, client
    client.close()


def command_of(client: Client, device_id: str, command_id: str) -> dict[str, Any]:
    response = client.get(f"/devices/{device_id}/commands/{command_id}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def wait_state(client: Client, device_id: str, command_id: str, state: str) -> dict[str, Any]:
    wait_for(lambda: command_of(client, device_id, command_id)["state"] == state, what=state)
    return command_of(client, device_id, command_id)


def answer(mqtt: Mqtt, device_id: str, command_id: str, status: str, **kwargs: Any) -> None:
    payload = contract.encode_command_result(command_id, status, **kwargs)
    mqtt.publish(contract.topic(device_id, contract.CMD_RESULT), payload)


def test_a_command_reaches_the_device_and_its_answers_resolve_it(
    link: Link, worker: ConfigWorker, device: tuple[str, Mqtt]
) -> None:
    device_id, mqtt = device
    _, operator = link.tenant.user("operator")
    response = operator.post(
        f"/devices/{device_id}/commands",
        json={"name": "charging.start", "args": {"connector": 1}, "timeout": 120},
    )
    assert response.status_code == 202, response.get_json()
    sent = response.get_json()
    assert sent["state"] == "pending" and sent["sent"] is True
    assert sent["_links"]["self"]["href"].endswith(f"/commands/{sent['id']}")

    delivered = mqtt.expect()
    assert delivered.topic == contract.topic(device_id, contract.CMD)
    command = contract.decode_command(delivered.payload)
    assert (command.id, command.name, command.args) == (
        sent["id"],
        "charging.start",
        {"connector": 1},
    )
    assert command.expires is not None and not command.expired(contract_now())

    answer(mqtt, device_id, command.id, "accepted")
    wait_state(operator, device_id, command.id, "accepted")
    answer(mqtt, device_id, command.id, "ok", result={"session": "s-1"})
    done = wait_state(operator, device_id, command.id, "succeeded")
    assert done["result"] == {"session": "s-1"} and done["reason"] is None
    # A redelivered answer (QoS 1) changes nothing.
    answer(mqtt, device_id, command.id, "error", reason="late")
    listed = operator.get(f"/devices/{device_id}/commands").get_json()
    assert [c["id"] for c in listed] == [command.id]
    assert command_of(operator, device_id, command.id)["state"] == "succeeded"
    actions = [
        e["action"]
        for e in link.admin.get("/audit-log", query_string={"object_id": device_id}).get_json()
    ]
    assert "device.command" in actions and "device.command_succeeded" in actions


def contract_now() -> int:
    return int(utcnow().timestamp() * 1000)


def test_a_device_that_refuses_reports_it_with_its_reason(
    link: Link, worker: ConfigWorker, device: tuple[str, Mqtt]
) -> None:
    device_id, mqtt = device
    sent = link.admin.post(f"/devices/{device_id}/commands", json={"name": "reboot"}).get_json()
    command = contract.decode_command(mqtt.expect().payload)
    assert command.args == {}
    answer(mqtt, device_id, command.id, "rejected", reason="session in progress")
    refused = wait_state(link.admin, device_id, sent["id"], "rejected")
    assert refused["reason"] == "session in progress"


def test_refused_commands_never_reach_the_device(
    link: Link, worker: ConfigWorker, device: tuple[str, Mqtt]
) -> None:
    device_id, mqtt = device
    path = f"/devices/{device_id}/commands"
    _, installer = link.tenant.user("installer")
    _, owner = link.tenant.user("owner")
    _, operator = link.tenant.user("operator")

    # installer: no devices:command at all.
    assert installer.post(path, json={"name": "reboot"}).status_code == 403

    def refused(client: Client, body: dict[str, Any], status: int = 422) -> dict[str, Any]:
        response = client.post(path, json=body)
        assert response.status_code == status, response.get_json()
        errors: dict[str, Any] = response.get_json()["errors"]
        return errors

    assert "name" in refused(operator, {"name": "no.such.command"})["json"]
    assert "name" in refused(operator, {"name": "Not A Name"})["json"]
    assert "name" in refused(operator, {"name": "config.apply", "args": {"version": 1}})["json"]
    assert refused(operator, {"name": "charging.start"})["json"] == {
        "args": {"connector": ["missing required argument"]}
    }
    bad = refused(operator, {"name": "charging.start", "args": {"connector": 2}})
    assert bad["json"] == {"args": {"connector": ["above the maximum 1"]}}
    extra = refused(operator, {"name": "reboot", "args": {"force": True}})
    assert "force" in extra["json"]["args"]
    assert "timeout" in refused(operator, {"name": "reboot", "timeout": 0})["json"]
    assert owner.post(path, json={"name": "reboot"}).status_code == 202  # owners may reboot
    assert contract.decode_command(mqtt.expect().payload).name == "reboot"
    assert operator.post("/devices/nope/commands", json={"name": "reboot"}).status_code == 404

    assert mqtt.drain() == []
    assert [c["name"] for c in operator.get(path).get_json()] == ["reboot"]


def test_a_family_without_schema_takes_any_well_formed_command(
    link: Link, worker: ConfigWorker
) -> None:
    device_id, password = link.device(hardware_family="no-such-family")
    with link.mqtt(device_id, password).connected() as mqtt:
        mqtt.subscribe(contract.topic(device_id, contract.CMD))
        response = link.admin.post(
            f"/devices/{device_id}/commands", json={"name": "vendor.thing", "args": {"x": [1]}}
        )
        assert response.status_code == 202, response.get_json()
        assert contract.decode_command(mqtt.expect().payload).args == {"x": [1]}


def test_unsent_commands_are_resent_and_unanswered_ones_time_out(
    link: Link, worker: ConfigWorker, device: tuple[str, Mqtt]
) -> None:
    device_id, mqtt = device
    link.app.extensions[PUBLISHER] = Unreachable()
    body = link.admin.post(
        f"/devices/{device_id}/commands", json={"name": "reboot", "timeout": 30}
    ).get_json()
    assert body["state"] == "pending" and body["sent"] is False
    assert mqtt.drain() == []

    worker.sweep()  # the broker is reachable from the worker: it sends what the API could not
    assert contract.decode_command(mqtt.expect().payload).id == body["id"]
    assert command_of(link.admin, device_id, body["id"])["sent"] is True

    later = utcnow() + dt.timedelta(seconds=31)
    assert body["id"] in worker.sweep(now=later)
    timed_out = command_of(link.admin, device_id, body["id"])
    assert timed_out["state"] == "timed_out" and "expired" in timed_out["reason"]
    # Expired commands are not re-sent either.
    assert worker.resend_commands(now=later) == []
