"""The device registry: search, uniqueness, lifecycle, ETags, pagination, groups, sites."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask

from cloud.configuration.publisher import EXTENSION, MqttPublisher
from cloud.devicelink.endpoint import Endpoint
from tests.helpers import Client, Tenant
from tests.link import app_settings
from tests.services.amqtt_broker import free_port


def test_search_by_serial_mac_family_state_and_text(tenant: Tenant) -> None:
    a = tenant.device(mac="24-0a-c4-aa-00-01", hardware_family="wallbox-7kw", name="Garage")
    b = tenant.device(mac="240AC4AA0002", protocol="ocpp")
    admin = tenant.admin

    def ids(**query: object) -> set[str]:
        response = admin.get("/devices", query_string={"organization_id": tenant.id, **query})
        assert response.status_code == 200, response.get_json()
        return {d["id"] for d in response.get_json()}

    assert ids(serial=a["serial"]) == {a["id"]}
    assert ids(mac="24:0A:C4:AA:00:02") == {b["id"]}
    assert ids(mac="240ac4aa0001") == {a["id"]}
    assert ids(hardware_family="wallbox-7kw") == {a["id"]}
    assert ids(protocol="ocpp") == {b["id"]}
    assert ids(state="manufactured") == {a["id"], b["id"]}
    assert ids(q="arag") == {a["id"]}
    bad = admin.get("/devices", query_string={"mac": "not-a-mac"})
    assert bad.status_code == 422 and "mac" in bad.get_json()["errors"]["query"]


def test_serial_mac_and_id_are_unique_and_named_when_taken(tenant: Tenant) -> None:
    first = tenant.device(mac="24:0A:C4:BB:00:01")
    for field, value in (
        ("serial", first["serial"]),
        ("mac", "24:0a:c4:bb:00:01"),
        ("id", first["id"]),
    ):
        body = {
            "serial": "other-" + field,
            "hardware_family": "ac22-3p",
            "organization_id": tenant.id,
            field: value,
        }
        response = tenant.admin.post("/devices", json=body)
        assert response.status_code == 409, field
        assert field in response.get_json()["errors"]["json"]


def test_lifecycle_moves_only_along_allowed_transitions(tenant: Tenant) -> None:
    path = f"/devices/{tenant.device()['id']}"
    admin = tenant.admin
    for state in ("provisioned", "active", "suspended", "active"):
        response = admin.patch(path, json={"state": state})
        assert response.status_code == 200 and response.get_json()["state"] == state
    back = admin.patch(path, json={"state": "manufactured"})
    assert back.status_code == 409
    assert "state" in back.get_json()["errors"]["json"]
    assert admin.patch(path, json={"state": "decommissioned"}).status_code == 200
    assert admin.patch(path, json={"state": "active"}).status_code == 409


def test_updates_need_the_current_etag(tenant: Tenant) -> None:
    admin = tenant.admin
    path = f"/devices/{tenant.device()['id']}"
    current = admin.get(path)
    etag = current.headers["ETag"]
    assert admin.get(path, headers={"If-None-Match": etag}).status_code == 304
    missing = admin.request("PATCH", path, json={"name": "a"})
    assert missing.status_code == 428 and missing.get_json()["code"] == 428
    ok = admin.request("PATCH", path, json={"name": "a"}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.headers["ETag"] != etag
    stale = admin.request("PATCH", path, json={"name": "b"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert admin.get(path).get_json()["name"] == "a"


def test_lists_are_paginated_with_metadata_and_link_headers(tenant: Tenant) -> None:
    for _ in range(5):
        tenant.device()
    response = tenant.admin.get(
        "/devices", query_string={"organization_id": tenant.id, "page": 2, "page_size": 2}
    )
    assert len(response.get_json()) == 2
    meta = json.loads(response.headers["X-Pagination"])
    assert meta["total"] == 5 and meta["page"] == 2 and meta["next_page"] == 3
    links = response.headers["Link"]
    assert 'rel="next"' in links and 'rel="prev"' in links and "page=3" in links
    assert tenant.admin.get("/devices", query_string={"page_size": 1000}).status_code == 422
    beyond = tenant.admin.get("/devices", query_string={"page": 10**12})
    assert beyond.status_code == 200 and beyond.get_json() == []


def test_resources_link_to_their_relations(tenant: Tenant) -> None:
    site = tenant.admin.created("/sites", {"name": "Yard", "organization_id": tenant.id})
    device = tenant.device(site_id=site["id"])
    links = device["_links"]
    assert links["self"]["href"] == f"/api/v1/devices/{device['id']}"
    assert links["site"]["href"] == f"/api/v1/sites/{site['id']}"
    assert links["organization"]["href"] == f"/api/v1/organizations/{tenant.id}"
    assert tenant.admin.get(links["audit"]["href"]).get_json()[0]["action"] == "device.create"


def test_a_device_cannot_be_placed_on_another_organizations_site(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    foreign = tenant.admin.created(
        "/sites", {"name": "Foreign", "organization_id": other_tenant.id}
    )
    response = tenant.admin.post(
        "/devices",
        json={
            "serial": "S-foreign",
            "hardware_family": "ac22-3p",
            "organization_id": tenant.id,
            "site_id": foreign["id"],
        },
    )
    assert response.status_code == 422 and "site_id" in response.get_json()["errors"]["json"]


def test_an_organization_admin_cannot_create_in_another_organization(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    _, org_admin = tenant.user("organization-admin")
    response = org_admin.post(
        "/devices",
        json={"serial": "S-x", "hardware_family": "ac22-3p", "organization_id": other_tenant.id},
    )
    assert response.status_code == 422
    assert "organization_id" in response.get_json()["errors"]["json"]
    assert (
        org_admin.post("/organizations", json={"slug": "mine", "name": "Mine"}).status_code == 403
    )


@pytest.mark.parametrize("bad_zone", ["Mars/Olympus", "", "../../etc/passwd"])
def test_sites_need_a_real_time_zone(tenant: Tenant, bad_zone: str) -> None:
    response = tenant.admin.post(
        "/sites", json={"name": "Z", "timezone": bad_zone, "organization_id": tenant.id}
    )
    assert response.status_code == 422 and "timezone" in response.get_json()["errors"]["json"]


def test_groups_add_and_remove_members_idempotently(
    tenant: Tenant, other_tenant: Tenant, admin: Client
) -> None:
    group = admin.created("/device-groups", {"name": "g", "organization_id": tenant.id})
    device = tenant.device()
    path = f"/device-groups/{group['id']}/devices/{device['id']}"
    assert admin.put(path).status_code == 204
    assert admin.put(path).status_code == 204
    assert admin.get(f"/devices/{device['id']}").get_json()["group_ids"] == [group["id"]]
    foreign = other_tenant.device()
    assert admin.put(f"/device-groups/{group['id']}/devices/{foreign['id']}").status_code == 404
    assert admin.request("DELETE", path).status_code == 204
    assert admin.request("DELETE", path).status_code == 404


def test_an_organization_with_devices_cannot_be_deleted(tenant: Tenant) -> None:
    tenant.device()
    response = tenant.admin.delete(f"/organizations/{tenant.id}")
    assert response.status_code == 409
    assert "organization_id" in response.get_json()["errors"]["path"]


def test_a_device_is_deleted_even_when_the_broker_is_down(
    app: Flask, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    """Clearing the retained desired document is best effort: a broker that is down is logged
    and the delete still succeeds."""
    device = tenant.device()
    service = app_settings(app).broker_service_user
    dead = Endpoint("127.0.0.1", free_port(), False, service, "unused")
    previous = app.extensions.get(EXTENSION)
    app.extensions[EXTENSION] = MqttPublisher(dead, timeout=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="cloud.api.devices.routes"):
            assert tenant.admin.delete(f"/devices/{device['id']}").status_code == 204
    finally:
        app.extensions[EXTENSION] = previous
    assert tenant.admin.get(f"/devices/{device['id']}").status_code == 404
    assert f"config/desired of deleted device {device['id']} left on the broker" in caplog.text
