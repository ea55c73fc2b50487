"""The registry follows the device: what its status announces (firmware, parameter schema) is
stored on the device record, and its first connect puts it in service (``active``), audited as
the status worker's doing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import parameters
from cloud.audit.service import system_recorder
from cloud.db import get_database
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.devices.status import StatusUpdate
from cloud.devices.status_worker import StatusWorker
from firmware.core import contract
from firmware.host.fleet import Fleet
from tests.firmware.test_fleet import RunningFleet
from tests.helpers import Client, Tenant
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link
from tests.services.amqtt_broker import free_port


@pytest.fixture
def worker(app: Flask, tmp_path: Path) -> Iterator[StatusWorker]:
    """A status worker as `ampfleet worker status` builds it, fed by hand (never started)."""
    nowhere = Endpoint("127.0.0.1", free_port(), False, "nobody", "nothing")
    status_worker = StatusWorker(
        get_database(app), nowhere, "status-unit", tmp_path, False, audit=system_recorder("status")
    )
    yield status_worker
    status_worker.rejects.close()


def device_of(admin: Client, device_id: str) -> dict[str, Any]:
    response = admin.get(f"/devices/{device_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def audit_of(admin: Client, device_id: str) -> list[dict[str, Any]]:
    query = {"object_type": "device", "object_id": device_id, "page_size": 100}
    entries: list[dict[str, Any]] = admin.get("/audit-log", query_string=query).get_json()
    return entries


@pytest.mark.parametrize("initial", ["manufactured", "provisioned", "released"])
def test_first_connect_activates_and_stores_the_announced_versions(
    worker: StatusWorker, tenant: Tenant, admin: Client, initial: str
) -> None:
    device_id = tenant.device(state=initial)["id"]
    worker.apply(StatusUpdate(device_id, True, 1, "1.0.0", "ac22-3p.3"))

    device = device_of(admin, device_id)
    assert device["state"] == "active"
    assert device["firmware_version"] == "1.0.0" and device["schema_version"] == "ac22-3p.3"
    activated = [e for e in audit_of(admin, device_id) if e["action"] == "device.activate"]
    assert len(activated) == 1
    assert activated[0]["actor_type"] == "system"
    assert activated[0]["actor_id"] == "system:status"
    assert activated[0]["details"]["state"] == [initial, "active"]
    announced = [e for e in audit_of(admin, device_id) if e["action"] == "device.announce"]
    assert announced[0]["details"]["firmware_version"] == [None, "1.0.0"]


def test_a_later_status_updates_the_versions_and_a_last_will_keeps_them(
    worker: StatusWorker, tenant: Tenant, admin: Client
) -> None:
    device_id = tenant.device()["id"]
    worker.apply(StatusUpdate(device_id, True, 1, "1.0.0", "ac22-3p.2"))
    worker.apply(StatusUpdate(device_id, False, None, None, None))  # the will: no fw, no schema
    assert device_of(admin, device_id)["firmware_version"] == "1.0.0"
    worker.apply(StatusUpdate(device_id, True, 2, "1.1.0", "ac22-3p.3"))
    device = device_of(admin, device_id)
    assert (device["firmware_version"], device["schema_version"]) == ("1.1.0", "ac22-3p.3")
    assert device["state"] == "active"
    # Activated once only; announced twice.
    actions = [e["action"] for e in audit_of(admin, device_id)]
    assert actions.count("device.activate") == 1 and actions.count("device.announce") == 2


@pytest.mark.parametrize("refused", ["suspended", "decommissioned"])
def test_a_suspended_or_decommissioned_device_stays_so(
    worker: StatusWorker, tenant: Tenant, admin: Client, refused: str
) -> None:
    device_id = tenant.device(state="provisioned")["id"]
    assert admin.patch(f"/devices/{device_id}", json={"state": refused}).status_code == 200
    worker.apply(StatusUpdate(device_id, True, 1, "1.0.0", None))
    device = device_of(admin, device_id)
    assert device["state"] == refused
    assert device["firmware_version"] == "1.0.0"  # what it runs is still worth knowing
    assert "device.activate" not in [e["action"] for e in audit_of(admin, device_id)]


def test_an_offline_status_activates_nothing(
    worker: StatusWorker, tenant: Tenant, admin: Client
) -> None:
    device_id = tenant.device()["id"]
    worker.apply(StatusUpdate(device_id, False, None, None, None))
    assert device_of(admin, device_id)["state"] == "manufactured"


def test_a_simulated_charger_shows_its_firmware_once_connected(link: Link, tmp_path: Path) -> None:
    """The firmware `ampfleet simulate` runs, over a real broker, through the real worker."""
    device = link.tenant.device(state="provisioned")
    issued = link.admin.post(f"/devices/{device['id']}/credentials").get_json()
    client_id = f"status-{uuid.uuid4().hex[:8]}"
    status_worker = StatusWorker(
        get_database(link.app),
        endpoint(link),
        client_id,
        tmp_path,
        shared_subscriptions=link.kind == "mosquitto",
        audit=system_recorder("status"),
    )
    status_worker.start()
    fleet = RunningFleet(Fleet([(device["id"], issued["password"])], link.host, link.port))
    try:
        wait_for(
            lambda: device_of(link.admin, device["id"])["state"] == "active",
            timeout=30,
            what="activated by its first connect",
        )
        shown = device_of(link.admin, device["id"])
        assert shown["firmware_version"] == "1.0.0"
        assert shown["schema_version"] == parameters.family_of("ac22-3p").schema_tag
    finally:
        fleet.stop()
        status_worker.stop()
        end_session(endpoint(link), client_id)
        # The firmware left retained messages on the session's broker: clear them, as the
        # device may, so that a later test subscribing to af/# does not receive them.
        with link.mqtt(device["id"], issued["password"]).connected() as mqtt:
            for channel in (contract.STATUS, contract.CONFIG_REPORTED):
                topic = contract.topic(device["id"], channel)
                mqtt.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
