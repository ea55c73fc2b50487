"""A device reports which parameter schema its firmware implements (contract 4.2 ``schema``):
the status worker stores it, and ``GET /devices/{id}/status`` shows it and whether it is still
the current schema of the device's hardware family."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import parameters
from cloud.db import get_database
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.devices.status import StatusUpdate
from cloud.devices.status_worker import StatusWorker
from tests.configuration.device_sim import SimulatedDevice
from tests.helpers import Client, Tenant
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link
from tests.services.amqtt_broker import free_port

FAMILY = parameters.load_family("ac22-3p")
CURRENT = FAMILY.schema_tag
OLDER = f"{FAMILY.id}.{FAMILY.schema_version - 1}"  # firmware built against the previous schema


@pytest.fixture
def status_worker(link: Link, tmp_path: Path) -> Iterator[StatusWorker]:
    """A status worker following ``link``'s broker, as `ampfleet worker status` builds it."""
    client_id = f"status-{uuid.uuid4().hex[:8]}"
    worker = StatusWorker(
        get_database(link.app),
        endpoint(link),
        client_id,
        tmp_path,
        shared_subscriptions=link.kind == "mosquitto",
    )
    worker.start()
    wait_for(worker.connection.connected.is_set, what="status worker connected")
    yield worker
    worker.stop()
    end_session(endpoint(link), client_id)


def status_of(client: Client, device_id: str) -> dict[str, Any]:
    response = client.get(f"/devices/{device_id}/status")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def simulated(link: Link, **kwargs: Any) -> SimulatedDevice:
    device_id, password = link.device(hardware_family=FAMILY.id)
    return SimulatedDevice(link.host, link.port, device_id, password, FAMILY.id, **kwargs)


@pytest.mark.parametrize(("announced", "current"), [(CURRENT, True), (OLDER, False)])
def test_the_status_shows_the_announced_schema_and_whether_it_is_current(
    link: Link, status_worker: StatusWorker, announced: str, current: bool
) -> None:
    sim = simulated(link, schema=announced)
    before = status_of(link.admin, sim.device_id)
    assert before["schema"] is None and before["schema_current"] is None
    sim.start()  # announces ``online`` with its schema after the CONNACK
    try:
        wait_for(
            lambda: status_of(link.admin, sim.device_id)["schema"] == announced,
            what=f"schema {announced} shown",
        )
        status = status_of(link.admin, sim.device_id)
        assert status["online"] is True
        assert status["schema_current"] is current
    finally:
        sim.stop()
    # Offline on purpose (a status without ``schema``): what it announced is kept.
    wait_for(lambda: status_of(link.admin, sim.device_id)["online"] is False, what="offline")
    status = status_of(link.admin, sim.device_id)
    assert status["schema"] == announced and status["schema_current"] is current


# --- the status worker on its own, on SQLite and MariaDB ------------------------------------


@pytest.fixture
def unconnected_worker(app: Flask, tmp_path: Path) -> Iterator[StatusWorker]:
    """A status worker that is never started: ``apply`` is fed by hand."""
    nowhere = Endpoint("127.0.0.1", free_port(), False, "nobody", "nothing")
    worker = StatusWorker(get_database(app), nowhere, "status-unit", tmp_path, False)
    yield worker
    worker.rejects.close()


def test_apply_keeps_the_last_announced_schema(
    unconnected_worker: StatusWorker, tenant: Tenant, admin: Client
) -> None:
    device_id = tenant.device(hardware_family=FAMILY.id)["id"]
    unconnected_worker.apply(StatusUpdate(device_id, True, 1, "1.4.2", OLDER))
    status = status_of(admin, device_id)
    assert status["schema"] == OLDER and status["schema_current"] is False
    # Updated firmware announces the current schema.
    unconnected_worker.apply(StatusUpdate(device_id, True, 2, "1.5.0", CURRENT))
    status = status_of(admin, device_id)
    assert status["schema"] == CURRENT and status["schema_current"] is True
    assert status["reported_firmware"] == "1.5.0"
    # The last will carries neither fw nor schema: both are kept.
    unconnected_worker.apply(StatusUpdate(device_id, False, None, None, None))
    status = status_of(admin, device_id)
    assert status["online"] is False
    assert (status["schema"], status["schema_current"]) == (CURRENT, True)
    assert status["reported_firmware"] == "1.5.0"


def test_schema_current_is_null_when_the_family_has_no_schema(
    unconnected_worker: StatusWorker, tenant: Tenant, admin: Client
) -> None:
    device_id = tenant.device(hardware_family="no-such-family")["id"]
    unconnected_worker.apply(StatusUpdate(device_id, True, 1, None, "no-such-family.1"))
    status = status_of(admin, device_id)
    assert status["schema"] == "no-such-family.1" and status["schema_current"] is None
