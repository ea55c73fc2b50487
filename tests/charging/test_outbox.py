"""The chargers' local authorization lists follow every change that alters them, published by
the charging worker and not by the API (``cloud.access.outbox``).

Card lists once went stale when a user was deactivated, deleted, or their roles changed; and
the API published every list itself, from inside the request, one MQTT connection per charger.
Now the API records requests with its change, and the worker publishes over its one
connection: on SQLite and MariaDB through the API, on amqtt and Mosquitto for the broker side.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from cloud.access import outbox
from cloud.access.models import RfidCard
from cloud.db import get_database
from cloud.devicelink import client as devicelink_client
from firmware.core import contract
from tests.charging.test_authorization import Recorder, next_list
from tests.charging.test_cards_api import Worker
from tests.charging.test_worker import running_charging_worker, wait_for
from tests.helpers import Client, Tenant, role_id
from tests.link import Link


def card(admin: Client, tenant: Tenant, user_id: int) -> str:
    """Register a card to the user; its upper-case uid."""
    uid = secrets.token_hex(4).upper()
    admin.created("/cards", {"uid": uid, "user_id": user_id, "organization_id": tenant.id})
    return uid


@pytest.fixture
def worker(app: Flask) -> Worker:
    return Worker(app)


def test_a_deactivated_or_deleted_users_card_leaves_the_lists(
    admin: Client, tenant: Tenant, worker: Worker
) -> None:
    first, second = tenant.device()["id"], tenant.device()["id"]
    user, _ = tenant.user("operator")  # charges on every charger of the organization
    uid = card(admin, tenant, user["id"])
    for device_id in (first, second):
        assert worker.lists_of(device_id)[-1].tokens == {uid: None}

    assert admin.patch(f"/users/{user['id']}", json={"is_active": False}).status_code == 200
    for device_id in (first, second):
        assert worker.lists_of(device_id)[-1].tokens == {}
    assert admin.patch(f"/users/{user['id']}", json={"is_active": True}).status_code == 200
    for device_id in (first, second):
        assert worker.lists_of(device_id)[-1].tokens == {uid: None}

    assert admin.delete(f"/users/{user['id']}").status_code == 204
    for device_id in (first, second):
        assert worker.lists_of(device_id)[-1].tokens == {}


def test_role_assignments_and_role_edits_move_the_card(
    admin: Client, tenant: Tenant, worker: Worker
) -> None:
    site = admin.created(
        "/sites", {"name": "s-" + secrets.token_hex(3), "organization_id": tenant.id}
    )
    on_site, elsewhere = tenant.device(site_id=site["id"])["id"], tenant.device()["id"]
    user, _ = tenant.user()  # no role: charges nowhere
    uid = card(admin, tenant, user["id"])
    assert worker.lists_of(on_site)[-1].tokens == {}

    # A new assignment adds the card; narrowed to a site, only there.
    assigned = admin.created(
        f"/users/{user['id']}/role-assignments",
        {"role_id": role_id(admin, "operator"), "site_id": site["id"]},
    )
    assert worker.lists_of(on_site)[-1].tokens == {uid: None}
    assert worker.lists_of(elsewhere)[-1].tokens == {}
    # Taken away, the card leaves.
    gone = admin.delete(f"/users/{user['id']}/role-assignments/{assigned['id']}")
    assert gone.status_code == 204
    assert worker.lists_of(on_site)[-1].tokens == {}

    # A custom role: its holders' cards follow its charging:start.
    role = admin.created(
        "/roles",
        {
            "name": "driver-" + secrets.token_hex(3),
            "organization_id": tenant.id,
            "permissions": ["devices:read", "charging:start", "charging:stop"],
        },
    )
    admin.created(f"/users/{user['id']}/role-assignments", {"role_id": role["id"]})
    assert worker.lists_of(elsewhere)[-1].tokens == {uid: None}
    sent = worker.count()
    relabelled = admin.patch(f"/roles/{role['id']}", json={"description": "drivers"})
    assert relabelled.status_code == 200
    assert worker.count() == sent  # nothing that alters a list, nothing published
    narrowed = admin.patch(f"/roles/{role['id']}", json={"permissions": ["devices:read"]})
    assert narrowed.status_code == 200, narrowed.get_json()
    assert worker.lists_of(on_site)[-1].tokens == worker.lists_of(elsewhere)[-1].tokens == {}
    widened = admin.patch(f"/roles/{role['id']}", json={"permissions": ["charging:start"]})
    assert widened.status_code == 200, widened.get_json()
    assert worker.lists_of(elsewhere)[-1].tokens == {uid: None}


def test_a_change_made_while_the_worker_publishes_is_published_next(
    app: Flask, admin: Client, tenant: Tenant, worker: Worker
) -> None:
    device_id = tenant.device()["id"]
    user, _ = tenant.user("operator")
    worker.drain()  # what earlier tests left
    first = card(admin, tenant, user["id"])
    added: list[str] = []
    # Another card registered while the worker's list (without it) is on its way: its request
    # lands on a row the worker is handling, and must outlive the worker's delete.
    worker.before_ack = lambda: added.append(card(admin, tenant, user["id"]))
    with get_database(app).transaction() as session:
        outbox.publish_requested(session, worker)
    assert Recorder.lists_of(worker, device_id)[-1].tokens == {first: None}
    with get_database(app).transaction() as session:
        assert outbox.pending(session) >= 1
    assert worker.lists_of(device_id)[-1].tokens == {first: None, added[0]: None}


def test_the_card_limit_still_refuses_a_list_and_the_charger_keeps_its_own(
    app: Flask, admin: Client, tenant: Tenant, worker: Worker
) -> None:
    device_id = tenant.device()["id"]
    user, _ = tenant.user("operator")
    first = card(admin, tenant, user["id"])
    assert worker.lists_of(device_id)[-1].tokens == {first: None}
    with get_database(app).transaction() as session:  # 200 cards in all, no request
        session.add_all(
            RfidCard(organization_id=tenant.id, uid=f"{n:08X}", user_id=user["id"])
            for n in range(contract.MAX_AUTH_TOKENS - 1)
        )
    refused = too_large()
    sent = worker.count()
    card(admin, tenant, user["id"])  # the 201st, through the API: the list is asked for
    assert worker.count() == sent  # refused, not cut, not sent
    assert too_large() == refused + 1
    assert worker.lists_of(device_id)[-1].tokens == {first: None}  # it keeps the list it has
    with get_database(app).transaction() as session:
        assert outbox.pending(session) == 0  # handled, not asked again for ever


def too_large() -> float:
    found = REGISTRY.get_sample_value("ampfleet_auth_lists_refused_total", {"reason": "too_large"})
    return found or 0.0


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The client ids of every cloud MQTT connection made from now on in this process."""
    made: list[str] = []
    original = devicelink_client.Link.__init__

    def counting(self: Any, endpoint: Any, client_id: str, **options: Any) -> None:
        made.append(client_id)
        original(self, endpoint, client_id, **options)

    monkeypatch.setattr(devicelink_client.Link, "__init__", counting)
    return made


def test_the_api_opens_no_mqtt_connection_for_lists(
    app: Flask, admin: Client, tenant: Tenant, connections: list[str]
) -> None:
    device_id = tenant.device()["id"]
    connections.clear()  # registering a device may publish its desired configuration
    user, _ = tenant.user("operator")
    uid = card(admin, tenant, user["id"])
    assert admin.patch(f"/users/{user['id']}", json={"is_active": False}).status_code == 200
    assert connections == []
    # The lists are asked for, in the database, for the worker.
    with get_database(app).transaction() as session:
        assert outbox.pending(session) >= 1
    worker = Worker(app)
    assert worker.lists_of(device_id)[-1].tokens == {}
    assert admin.patch(f"/users/{user['id']}", json={"is_active": True}).status_code == 200
    assert worker.lists_of(device_id)[-1].tokens == {uid: None}
    assert connections == []


# --- on the brokers -------------------------------------------------------------------------


@pytest.fixture
def charging_worker(link: Link, tmp_path: Path) -> Iterator[Any]:
    with running_charging_worker(link, tmp_path) as running:
        yield running


def published_total() -> float:
    return REGISTRY.get_sample_value("ampfleet_auth_lists_published_total") or 0.0


def test_group_membership_moves_the_card_of_a_role_narrowed_to_the_group(
    admin: Client, tenant: Tenant, worker: Worker
) -> None:
    """A role narrowed to a device group reaches the chargers in it: adding a charger to the
    group, removing it, and deleting the group each change its list."""
    group = admin.created(
        "/device-groups", {"name": "g-" + secrets.token_hex(3), "organization_id": tenant.id}
    )
    device_id = tenant.device()["id"]
    user, _ = tenant.user()
    uid = card(admin, tenant, user["id"])
    admin.created(
        f"/users/{user['id']}/role-assignments",
        {"role_id": role_id(admin, "operator"), "device_group_id": group["id"]},
    )
    assert worker.lists_of(device_id)[-1].tokens == {}
    member = f"/device-groups/{group['id']}/devices/{device_id}"
    assert admin.put(member).status_code == 204
    assert worker.lists_of(device_id)[-1].tokens == {uid: None}
    assert admin.delete(member).status_code == 204
    assert worker.lists_of(device_id)[-1].tokens == {}
    assert admin.put(member).status_code == 204
    assert worker.lists_of(device_id)[-1].tokens == {uid: None}
    etag = admin.get(f"/device-groups/{group['id']}").headers["ETag"]
    gone = admin.delete(f"/device-groups/{group['id']}", headers={"If-Match": etag})
    assert gone.status_code == 204
    assert worker.lists_of(device_id)[-1].tokens == {}


def test_the_worker_publishes_assignments_and_deactivations_to_the_retained_list(
    link: Link, charging_worker: Any
) -> None:
    device_id, password = link.device()
    user, _ = link.tenant.user()  # no role: charges nowhere
    uid = card(link.admin, link.tenant, user["id"])
    with link.mqtt(device_id, password).connected() as charger:
        assert not charger.subscribe(contract.topic(device_id, contract.AUTH_LIST)).is_failure
        link.admin.created(
            f"/users/{user['id']}/role-assignments", {"role_id": role_id(link.admin, "operator")}
        )
        listed = next_list(charger, device_id)
        while listed.tokens == {}:  # the list before the assignment, if it was retained
            listed = next_list(charger, device_id, listed.version)
        assert listed.tokens == {uid: None}
        off = link.admin.patch(f"/users/{user['id']}", json={"is_active": False})
        assert off.status_code == 200
        assert next_list(charger, device_id, listed.version).tokens == {}


def test_requests_left_while_no_worker_ran_are_published_on_start(
    link: Link, tmp_path: Path
) -> None:
    device_id, password = link.device()
    user, _ = link.tenant.user("operator")
    uid = card(link.admin, link.tenant, user["id"])  # no worker runs: the request waits
    with link.mqtt(device_id, password).connected() as charger:
        assert not charger.subscribe(contract.topic(device_id, contract.AUTH_LIST)).is_failure
        with running_charging_worker(link, tmp_path):
            listed = next_list(charger, device_id)
            while listed.tokens == {}:
                listed = next_list(charger, device_id, listed.version)
            assert listed.tokens == {uid: None}


def test_many_chargers_lists_go_out_over_the_workers_one_connection(
    link: Link, charging_worker: Any, connections: list[str]
) -> None:
    devices = [link.device()[0] for _ in range(25)]
    user, _ = link.tenant.user("operator")
    with link.service() as observer:
        assert not observer.subscribe(contract.topic_filter(contract.AUTH_LIST)).is_failure
        before = published_total()
        connections.clear()
        uid = card(link.admin, link.tenant, user["id"])
        seen: dict[str, contract.AuthList] = {}

        def all_listed() -> bool:
            message = observer.expect(timeout=20)
            device_id, _ = contract.parse_topic(message.topic)
            if message.payload:
                seen[device_id] = contract.decode_auth_list(message.payload)
            return all(uid in getattr(seen.get(d), "tokens", {}) for d in devices)

        wait_for(all_listed, "every charger's list with the card", timeout=60)
    # Published by the worker (its counter), over no connection but its own.
    assert published_total() - before >= len(devices)
    assert connections == []
