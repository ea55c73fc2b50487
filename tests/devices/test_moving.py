"""Moving a device between sites of its organization, and (platform admins only) between
organizations without leaving the old organization a way in: groups, owner and guest access,
open invitations, device tariffs and the card list follow the move; both audited."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask

from cloud.db import get_database
from cloud.identity.grants import AccessLevel, ChargerAccess
from tests.charging.test_cards_api import Worker
from tests.helpers import Client, Tenant


@pytest.fixture
def recorder(app: Flask) -> Worker:
    """What the charging worker publishes for the lists the API requested."""
    return Worker(app)


def audit(admin: Client, device_id: str, action: str) -> list[dict[str, Any]]:
    query = {"object_type": "device", "object_id": device_id, "action": action}
    entries: list[dict[str, Any]] = admin.get("/audit-log", query_string=query).get_json()
    return entries


def site(tenant: Tenant, name: str) -> dict[str, Any]:
    return tenant.admin.created("/sites", {"name": name, "organization_id": tenant.id})


def test_a_device_moves_between_sites_of_its_organization_audited(
    tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    first, second = site(tenant, "North"), site(tenant, "South")
    device = tenant.device(site_id=first["id"])
    path = f"/devices/{device['id']}"
    _, org_admin = tenant.user("organization-admin")

    moved = org_admin.patch(path, json={"site_id": second["id"]})
    assert moved.status_code == 200 and moved.get_json()["site_id"] == second["id"]
    [entry] = audit(tenant.admin, device["id"], "device.update")
    assert entry["details"]["site_id"] == [first["id"], second["id"]]

    foreign = site(other_tenant, "Elsewhere")
    refused = org_admin.patch(path, json={"site_id": foreign["id"]})
    assert refused.status_code == 422
    assert "site_id" in refused.get_json()["errors"]["json"]
    assert refused.get_json()["message"].startswith("site_id:")


def test_only_a_platform_admin_moves_a_device_to_another_organization(
    tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    device = tenant.device()
    path = f"/devices/{device['id']}"
    _, org_admin = tenant.user("organization-admin")
    refused = org_admin.patch(path, json={"organization_id": other_tenant.id})
    assert refused.status_code == 403 and refused.get_json()["message"]
    # Its own organization is no move: allowed, nothing changes.
    same = org_admin.patch(path, json={"organization_id": tenant.id, "name": "Bay 1"})
    assert same.status_code == 200 and same.get_json()["organization_id"] == tenant.id

    unknown = tenant.admin.patch(path, json={"organization_id": 2_000_000_000})
    assert unknown.status_code == 422
    assert "organization_id" in unknown.get_json()["errors"]["json"]
    assert tenant.admin.get(path).get_json()["organization_id"] == tenant.id


def test_a_site_of_the_new_organization_may_come_with_the_move(
    tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    old_site, new_site = site(tenant, "Old"), site(other_tenant, "New")
    device = tenant.device(site_id=old_site["id"])
    path = f"/devices/{device['id']}"
    # The old organization's site cannot follow it.
    wrong = tenant.admin.patch(
        path, json={"organization_id": other_tenant.id, "site_id": old_site["id"]}
    )
    assert wrong.status_code == 422 and "site_id" in wrong.get_json()["errors"]["json"]
    moved = tenant.admin.patch(
        path, json={"organization_id": other_tenant.id, "site_id": new_site["id"]}
    )
    assert moved.status_code == 200
    assert moved.get_json()["organization_id"] == other_tenant.id
    assert moved.get_json()["site_id"] == new_site["id"]


def test_moving_to_another_organization_leaves_nothing_of_the_old_one_behind(
    app: Flask, tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    admin = tenant.admin
    old_site = site(tenant, "Depot")
    group = admin.created("/device-groups", {"name": "Lot A", "organization_id": tenant.id})
    device = tenant.device(site_id=old_site["id"])
    path = f"/devices/{device['id']}"
    assert admin.put(f"/device-groups/{group['id']}/devices/{device['id']}").status_code == 204
    # Someone who reaches it through the old organization's group only...
    _, by_group = tenant.user("operator", device_group_id=group["id"])
    assert by_group.get(path).status_code == 200
    # ... an owner of the charger (granted by an accepted invitation; written here directly) ...
    owner, as_owner = tenant.user()
    with get_database(app).transaction() as session:
        session.add(
            ChargerAccess(device_id=device["id"], user_id=owner["id"], level=AccessLevel.OWNER)
        )
    assert as_owner.get(path).status_code == 200
    # ... a tariff the old organization priced this charger with, and its cards.
    tariff = admin.created(
        "/tariffs",
        {
            "name": "Depot price",
            "organization_id": tenant.id,
            "device_id": device["id"],
            "price_per_kwh": "0.30",
        },
    )
    old_uid = secrets.token_hex(4).upper()
    admin.created("/cards", {"uid": old_uid, "user_id": owner["id"], "organization_id": tenant.id})
    new_user, _ = other_tenant.user("operator")
    new_uid = secrets.token_hex(4).upper()
    admin.created(
        "/cards", {"uid": new_uid, "user_id": new_user["id"], "organization_id": other_tenant.id}
    )
    recorder.sent.clear()

    moved = admin.patch(path, json={"organization_id": other_tenant.id})
    assert moved.status_code == 200, moved.get_json()
    body = moved.get_json()
    assert body["organization_id"] == other_tenant.id
    assert body["site_id"] is None and body["group_ids"] == []

    assert by_group.get(path).status_code == 404
    assert as_owner.get(path).status_code in (403, 404)  # 403: it holds nothing anywhere now
    assert admin.get(f"{path}/access").get_json() == []
    assert admin.get(f"/tariffs/{tariff['id']}").status_code == 404
    # The card list now holds the new organization's cards, not the old one's.
    lists = recorder.lists_of(device["id"])
    assert lists, "the moved charger's card list was not republished"
    uids = set(lists[-1].tokens)
    assert new_uid in uids and old_uid not in uids

    # Audited for each reader: platform admins see it all, each organization its own side.
    [move] = audit(admin, device["id"], "device.move")
    assert move["organization_id"] is None
    assert move["details"]["organization_id"] == [tenant.id, other_tenant.id]
    assert move["details"]["site_id"] == [old_site["id"], None]
    assert move["details"]["group_ids"] == [group["id"]]
    assert move["details"]["access_user_ids"] == [owner["id"]]
    assert move["details"]["tariff_ids"] == [tariff["id"]]
    _, old_admin = tenant.user("organization-admin")
    [out] = old_admin.get("/audit-log", query_string={"object_id": device["id"]}).get_json()[:1]
    assert out["action"] == "device.move_out" and out["organization_id"] == tenant.id
    assert out["details"]["group_ids"] == [group["id"]]
    assert "organization_id" not in out["details"]  # where it went is not theirs to know
    _, new_admin = other_tenant.user("organization-admin")
    seen = new_admin.get("/audit-log", query_string={"object_id": device["id"]}).get_json()
    assert [e["action"] for e in seen] == ["device.move_in"]
    assert seen[0]["details"]["organization_id"] == [None, other_tenant.id]
    assert seen[0]["details"]["site_id"] == [None, None]
