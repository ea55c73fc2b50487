"""Who is online: the status worker follows retained status messages and last wills."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.db import get_database
from cloud.devicelink.threaded import end_session
from cloud.devices.status_worker import StatusWorker
from firmware.core import contract
from tests.helpers import Client
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link


@pytest.fixture
def status_worker(link: Link, tmp_path: Path) -> Iterator[StatusWorker]:
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


def status_of(client: Client, device_id: str) -> dict[str, object]:
    response = client.get(f"/devices/{device_id}/status")
    assert response.status_code == 200
    body: dict[str, object] = response.get_json()
    return body


def test_online_then_offline_by_last_will(link: Link, status_worker: StatusWorker) -> None:
    device_id, password = link.device()
    topic = contract.topic(device_id, contract.STATUS)
    assert status_of(link.admin, device_id)["online"] is False
    before = link.admin.get(
        "/fleet/status", query_string={"organization_id": link.tenant.id}
    ).get_json()
    assert before == {"devices": 1, "online": 0, "offline": 0, "never_seen": 1}

    device = link.mqtt(device_id, password, will=(topic, contract.LAST_WILL)).connected()
    device.publish(topic, contract.encode_status("online", fw="1.4.2"))
    wait_for(lambda: status_of(link.admin, device_id)["online"] is True, what="online")
    status = status_of(link.admin, device_id)
    assert status["reported_firmware"] == "1.4.2" and status["last_seen_at"]
    fleet = link.admin.get(
        "/fleet/status", query_string={"organization_id": link.tenant.id}
    ).get_json()
    assert fleet == {"devices": 1, "online": 1, "offline": 0, "never_seen": 0}

    device.drop()  # the socket dies without DISCONNECT: the broker publishes the will
    wait_for(lambda: status_of(link.admin, device_id)["online"] is False, what="offline")


def test_status_of_unknown_devices_and_garbage_is_counted_not_stored(
    link: Link, status_worker: StatusWorker
) -> None:
    device_id, password = link.device()
    with link.mqtt(device_id, password).connected() as device:
        device.publish(contract.topic(device_id, contract.STATUS), b'{"v":1,"state":"maybe"}')
        device.publish(contract.topic(device_id, contract.STATUS), contract.encode_status("online"))
    wait_for(lambda: status_of(link.admin, device_id)["online"] is True, what="online")
    rejected = status_worker.rejects._file.baseFilename
    assert "bad_value" in Path(rejected).read_text()


def test_metrics_need_the_metrics_permission(link: Link) -> None:
    response = link.admin.get("/metrics")
    assert response.status_code == 200
    assert b"ampfleet_devices_online" in response.data

    _, operator = link.tenant.user("operator")
    assert operator.get("/metrics").status_code == 403
    assert Client(link.admin.http).get("/metrics").status_code == 401
