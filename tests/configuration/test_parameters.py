"""Remote configuration end to end, on the embedded broker and on Mosquitto: the API judges
values and rights against the parameter schema before anything reaches a device; accepted
changes travel as retained desired documents; the config worker resolves them from what a
simulated device (tests/configuration/device_sim.py) reports."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.configuration.publisher import MqttPublisher
from cloud.configuration.worker import ConfigWorker
from cloud.db import utcnow
from cloud.devicelink.endpoint import Endpoint
from firmware.core import contract
from tests.configuration.device_sim import SimulatedDevice
from tests.helpers import Client
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link, running_config_worker
from tests.services.amqtt_broker import free_port

PUBLISHER = "ampfleet.config_publisher"


@pytest.fixture
def publisher(link: Link) -> Iterator[None]:
    """The API publishes as the service account on ``link``'s broker (the embedded test app's
    ``broker_url`` is not the test broker's port)."""
    previous = link.app.extensions.get(PUBLISHER)
    link.app.extensions[PUBLISHER] = MqttPublisher(endpoint(link))
    yield
    link.app.extensions[PUBLISHER] = previous


@pytest.fixture
def worker(link: Link, tmp_path: Path, publisher: None) -> Iterator[ConfigWorker]:
    """A config worker; tests sweep it by hand (its own sweep waits an hour)."""
    with running_config_worker(link, tmp_path) as config_worker:
        yield config_worker


@pytest.fixture
def charger(link: Link) -> Iterator[Callable[..., SimulatedDevice]]:
    """Factory of simulated devices registered in the tenant (not yet connected)."""
    made: list[SimulatedDevice] = []

    def make(family: str = "ac22-3p", **kwargs: Any) -> SimulatedDevice:
        device_id, password = link.device(hardware_family=family)
        sim = SimulatedDevice(link.host, link.port, device_id, password, family, **kwargs)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()


def parameters_of(client: Client, device_id: str) -> dict[str, Any]:
    response = client.get(f"/devices/{device_id}/parameters")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def change_state(client: Client, device_id: str, change_id: str) -> str | None:
    for change in parameters_of(client, device_id)["changes"]:
        if change["id"] == change_id:
            return str(change["state"])
    return None


def change_of(client: Client, device_id: str, change_id: str) -> dict[str, Any]:
    return next(c for c in parameters_of(client, device_id)["changes"] if c["id"] == change_id)


def wait_state(client: Client, device_id: str, change_id: str, state: str) -> dict[str, Any]:
    wait_for(lambda: change_state(client, device_id, change_id) == state, what=state)
    return change_of(client, device_id, change_id)


def downlink(sim: SimulatedDevice) -> list[tuple[str, bytes]]:
    """What the device received from the cloud (its own status/report echoes excluded)."""
    return [
        (topic, payload)
        for topic, payload in sim.downlink()
        if topic.endswith(("/config/desired", "/cmd"))
    ]


def audit_actions(link: Link, device_id: str) -> list[str]:
    response = link.admin.get("/audit-log", query_string={"object_id": device_id})
    assert response.status_code == 200, response.get_json()
    return [entry["action"] for entry in response.get_json()]


def test_operator_sets_a_setting_the_device_applies_and_reports(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger().start()
    _, operator = link.tenant.user("operator")
    response = operator.put(
        f"/devices/{sim.device_id}/parameters/max_current_a", json={"value": 20}
    )
    assert response.status_code == 202, response.get_json()
    change = response.get_json()
    assert change["state"] == "pending" and change["sent"] is True
    assert change["values"] == {"max_current_a": 20} and change["desired_version"] == 1

    applied = wait_state(operator, sim.device_id, change["id"], "applied")
    assert applied["reason"] is None
    body = parameters_of(operator, sim.device_id)
    assert body["desired"] == body["reported"] == {"max_current_a": 20}
    assert body["delta"] == {} and body["pending"] == []
    assert body["desired_version"] == body["reported_version"] == 1
    row = next(p for p in body["parameters"] if p["id"] == "max_current_a")
    assert row["writable"] is True and row["desired"] == row["reported"] == 20
    assert sim.values["max_current_a"] == 20
    # What went over the wire is the contract's: the retained document and the command.
    desired = [p for t, p in downlink(sim) if t.endswith("/config/desired")]
    assert contract.decode_config(desired[-1]).values == {"max_current_a": 20}
    assert "device.configure" in audit_actions(link, sim.device_id)
    assert "device.configuration_applied" in audit_actions(link, sim.device_id)


def test_refused_requests_never_reach_the_device(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger().start()
    path = f"/devices/{sim.device_id}/parameters"
    _, guest = link.tenant.user("guest")
    _, owner = link.tenant.user("owner")
    _, operator = link.tenant.user("operator")

    # guest: no devices:configure at all.
    assert guest.put(f"{path}/max_current_a", json={"value": 20}).status_code == 403
    # owner: may configure, but the schema keeps max_current_a for installers.
    refused = owner.put(f"{path}/max_current_a", json={"value": 20})
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"parameters": ["max_current_a"]}
    # ... while the owner may dim the LEDs (proves the 403 above is the schema's).
    assert owner.put(f"{path}/led_brightness_pct", json={"value": 200}).status_code == 422
    # out of range, off the step grid, wrong type: 422 naming value, with the schema's reason.
    for value, reason in ((40, "above the maximum 32"), (5, "below the minimum 6")):
        response = operator.put(f"{path}/max_current_a", json={"value": value})
        assert response.status_code == 422
        assert response.get_json()["errors"] == {"json": {"value": [reason]}}
    assert operator.put(f"{path}/phases", json={"value": 2}).get_json()["errors"] == {
        "json": {"value": ["not a multiple of the step 2"]}
    }
    assert operator.put(f"{path}/max_current_a", json={"value": "16"}).status_code == 422
    assert operator.put(f"{path}/max_current_a", json={"value": 16.5}).status_code == 422
    # a telemetry value is not a setting; an unknown id is not there.
    assert operator.put(f"{path}/power_w", json={"value": 1}).status_code == 403
    assert operator.put(f"{path}/no_such_thing", json={"value": 1}).status_code == 404
    assert (
        operator.put("/devices/nope/parameters/max_current_a", json={"value": 9}).status_code == 404
    )

    time.sleep(0.5)  # room for a stray message to arrive, were one sent
    assert downlink(sim) == []
    body = parameters_of(operator, sim.device_id)
    assert body["desired_version"] == 0 and body["changes"] == []
    assert "device.configure" not in audit_actions(link, sim.device_id)


def test_unknown_family_is_a_conflict_naming_hardware_family(link: Link, publisher: None) -> None:
    device = link.tenant.device(hardware_family="no-such-family")
    response = link.admin.put(
        f"/devices/{device['id']}/parameters/max_current_a", json={"value": 16}
    )
    assert response.status_code == 409
    assert "hardware_family" in response.get_json()["errors"]


def test_a_device_that_refuses_a_value_reports_it_as_rejected(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger(refuse_above={"max_current_a": 20}).start()
    _, operator = link.tenant.user("operator")
    change = operator.put(
        f"/devices/{sim.device_id}/parameters/max_current_a", json={"value": 25}
    ).get_json()
    # The device reports the values still in force, then answers the command: the report alone
    # rejects the change ("device kept ..."), and the answer then gives the device's own reason.
    reason = "max_current_a: firmware limit 20"
    wait_for(
        lambda: change_of(operator, sim.device_id, change["id"]).get("reason") == reason,
        what="the device's reason",
    )
    assert change_of(operator, sim.device_id, change["id"])["state"] == "rejected"
    body = parameters_of(operator, sim.device_id)
    assert body["reported"] == {"max_current_a": 16}  # the value still in force
    assert body["delta"] == {"max_current_a": 25}
    assert "device.configuration_rejected" in audit_actions(link, sim.device_id)


def test_a_change_made_offline_is_applied_when_the_device_returns(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger().start()  # once, so that the broker keeps its session
    sim.stop()
    _, operator = link.tenant.user("operator")
    change = operator.put(
        f"/devices/{sim.device_id}/parameters/night_window_start_s", json={"value": 23 * 3600}
    ).get_json()
    assert change["sent"] is True  # the broker holds the retained document
    assert change_state(operator, sim.device_id, change["id"]) == "pending"

    sim.start()  # subscribes again: the retained desired document arrives
    wait_state(operator, sim.device_id, change["id"], "applied")
    assert sim.values["night_window_start_s"] == 23 * 3600


def test_unanswered_changes_time_out_on_the_sweep(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger()  # never connects
    _, operator = link.tenant.user("operator")
    change = operator.put(
        f"/devices/{sim.device_id}/parameters/rfid_required", json={"value": True}
    ).get_json()
    assert worker.sweep() == []  # not yet stale
    later = utcnow() + worker.timeout + dt.timedelta(seconds=1)
    assert change["id"] in worker.sweep(now=later)
    timed_out = wait_state(operator, sim.device_id, change["id"], "timed_out")
    assert timed_out["reason"] == "no answer from the device"


def test_a_broker_that_is_down_leaves_the_change_pending_and_the_worker_resends_it(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger().start()
    _, operator = link.tenant.user("operator")
    dead = Endpoint("127.0.0.1", free_port(), False, link.service_user, link.service_password)
    link.app.extensions[PUBLISHER] = MqttPublisher(dead, timeout=1.0)
    response = operator.put(
        f"/devices/{sim.device_id}/parameters/max_current_a", json={"value": 10}
    )
    assert response.status_code == 202
    change = response.get_json()
    assert change["sent"] is False and downlink(sim) == []

    assert worker.resend() == [change["id"]]
    wait_state(operator, sim.device_id, change["id"], "applied")


def test_bulk_patch_is_all_or_nothing(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    sim = charger().start()
    _, installer = link.tenant.user("installer")
    path = f"/devices/{sim.device_id}/parameters"
    refused = installer.patch(path, json={"values": {"max_current_a": 10, "phases": 2}})
    assert refused.status_code == 422
    assert refused.get_json()["errors"] == {
        "json": {"values": {"phases": ["not a multiple of the step 2"]}}
    }
    assert installer.patch(path, json={"values": {"power_w": 1}}).status_code == 403
    assert downlink(sim) == []

    response = installer.patch(path, json={"values": {"max_current_a": 10, "phases": 1}})
    assert response.status_code == 202, response.get_json()
    change = response.get_json()
    wait_state(installer, sim.device_id, change["id"], "applied")
    body = parameters_of(installer, sim.device_id)
    assert body["reported"] == {"max_current_a": 10, "phases": 1} and body["delta"] == {}


def test_group_patch_judges_each_member_against_its_own_family(
    link: Link, worker: ConfigWorker, charger: Callable[..., SimulatedDevice]
) -> None:
    three_phase = charger().start()
    wallbox = charger("wallbox-7kw").start()
    group = link.admin.created(
        "/device-groups", {"name": "lot " + uuid.uuid4().hex[:6], "organization_id": link.tenant.id}
    )
    for sim in (three_phase, wallbox):
        assert (
            link.admin.put(f"/device-groups/{group['id']}/devices/{sim.device_id}").status_code
            == 204
        )
    _, operator = link.tenant.user("operator")
    path = f"/device-groups/{group['id']}/parameters"

    refused = operator.patch(path, json={"values": {"phases": 1}})
    assert refused.status_code == 422
    problems = refused.get_json()["errors"]["json"]["values"]
    assert list(problems) == [wallbox.device_id]
    assert problems[wallbox.device_id] == {
        "phases": ["no parameter 'phases' in family wallbox-7kw"]
    }
    assert downlink(three_phase) == downlink(wallbox) == []

    response = operator.patch(path, json={"values": {"max_current_a": 12}})
    assert response.status_code == 202, response.get_json()
    changes = response.get_json()["devices"]
    assert set(changes) == {three_phase.device_id, wallbox.device_id}
    for device_id, change in changes.items():
        wait_state(operator, device_id, change["id"], "applied")
        assert "device.configure" in audit_actions(link, device_id)
    assert three_phase.values["max_current_a"] == wallbox.values["max_current_a"] == 12


def retained_desired(link: Link, device_id: str) -> list[bytes]:
    """The retained ``config/desired`` a fresh subscriber (the service account) is handed.

    No waiting for silence: after the SUBACK the subscriber publishes a sentinel (not retained)
    on the same topic, and a retained document, which the broker sends when the subscription is
    made, arrives before it.
    """
    topic = contract.topic(device_id, contract.CONFIG_DESIRED)
    sentinel = f"sentinel-{uuid.uuid4().hex}".encode()
    with link.service() as subscriber:
        assert subscriber.subscribe(topic).value == 1
        subscriber.publish(topic, sentinel)
        got = []
        while (message := subscriber.expect()).payload != sentinel:
            got.append(message)
    # amqtt 0.12.1 may hand other devices' retained documents too (see device_sim.foreign).
    return [m.payload for m in got if m.topic == topic]


def test_deleting_a_device_clears_its_retained_desired_document(
    link: Link, publisher: None
) -> None:
    device_id, _ = link.device()
    change = link.admin.put(
        f"/devices/{device_id}/parameters/max_current_a", json={"value": 20}
    ).get_json()
    assert change["sent"] is True
    [document] = retained_desired(link, device_id)  # what a subscriber got before the delete
    assert contract.decode_config(document).values == {"max_current_a": 20}

    assert link.admin.delete(f"/devices/{device_id}").status_code == 204
    assert retained_desired(link, device_id) == []
