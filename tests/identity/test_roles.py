"""Roles are editable lists of named permissions; grants are scoped and cannot escalate."""

from __future__ import annotations

from cloud.identity.permissions import CATALOGUE, SYSTEM_ROLES
from tests.helpers import Client, Tenant, role_id


def test_the_catalogue_and_the_seeded_roles_are_published(admin: Client) -> None:
    names = {
        p["name"] for p in admin.get("/permissions", query_string={"page_size": 100}).get_json()
    }
    assert names == set(CATALOGUE)
    roles = admin.get("/roles", query_string={"page_size": 100}).get_json()
    system = {r["name"]: set(r["permissions"]) for r in roles if r["system"]}
    assert set(SYSTEM_ROLES) <= set(system)
    assert {
        "platform-admin",
        "organization-admin",
        "operator",
        "support",
        "installer",
        "owner",
        "guest",
    } <= set(system)
    assert "devices:delete" not in system["operator"]
    assert system["platform-admin"] == set(CATALOGUE)


def test_a_custom_role_takes_effect_at_once_when_edited(tenant: Tenant) -> None:
    _, org_admin = tenant.user("organization-admin")
    role = org_admin.created("/roles", {"name": "viewer", "permissions": ["devices:read"]})
    assert role["organization_id"] == tenant.id and role["system"] is False
    user, viewer = tenant.user()
    org_admin.created(f"/users/{user['id']}/role-assignments", {"role_id": role["id"]})
    tenant.device()
    assert viewer.get("/devices").status_code == 200
    edited = org_admin.patch(f"/roles/{role['id']}", json={"permissions": ["sites:read"]})
    assert edited.status_code == 200 and edited.get_json()["permissions"] == ["sites:read"]
    assert viewer.get("/devices").status_code == 403
    assert viewer.get("/sites").status_code == 200
    held = org_admin.delete(f"/roles/{role['id']}")
    assert held.status_code == 409 and "role_id" in held.get_json()["errors"]["path"]


def test_no_one_grants_more_than_they_hold(tenant: Tenant) -> None:
    _, org_admin = tenant.user("organization-admin")
    escalate = org_admin.post("/roles", json={"name": "god", "permissions": ["platform:admin"]})
    assert escalate.status_code == 403
    assert "permissions" in escalate.get_json()["errors"]["json"]
    user, _ = tenant.user()
    platform_role = role_id(org_admin, "platform-admin")
    assigned = org_admin.post(
        f"/users/{user['id']}/role-assignments", json={"role_id": platform_role}
    )
    assert assigned.status_code == 403
    assert "role_id" in assigned.get_json()["errors"]["json"]
    system_edit = org_admin.patch(
        f"/roles/{role_id(org_admin, 'guest')}", json={"permissions": ["devices:read"]}
    )
    assert system_edit.status_code == 403
    _, operator = tenant.user("operator")
    assert operator.post("/users", json={"email": "x@y.test"}).status_code == 403


def test_role_names_are_unique_and_system_names_reserved(tenant: Tenant) -> None:
    _, org_admin = tenant.user("organization-admin")
    clash = org_admin.post("/roles", json={"name": "operator", "permissions": []})
    assert clash.status_code == 409 and "name" in clash.get_json()["errors"]["json"]
    org_admin.created("/roles", {"name": "night-shift", "permissions": []})
    again = org_admin.post("/roles", json={"name": "night-shift", "permissions": []})
    assert again.status_code == 409


def test_a_grant_narrowed_to_a_site_or_group_covers_only_those_devices(tenant: Tenant) -> None:
    admin = tenant.admin
    depot = admin.created(
        "/sites", {"name": "Depot", "organization_id": tenant.id, "timezone": "Europe/Berlin"}
    )
    inside = tenant.device(site_id=depot["id"])
    outside = tenant.device()
    grouped = tenant.device()
    _, installer = tenant.user("installer", site_id=depot["id"])
    seen = {d["id"] for d in installer.get("/devices").get_json()}
    assert seen == {inside["id"]}
    assert installer.get(f"/devices/{outside['id']}").status_code == 404
    assert installer.patch(f"/devices/{inside['id']}", json={"name": "bay 1"}).status_code == 200

    group = admin.created("/device-groups", {"name": "wave-1", "organization_id": tenant.id})
    assert admin.put(f"/device-groups/{group['id']}/devices/{grouped['id']}").status_code == 204
    _, support = tenant.user("support", device_group_id=group["id"])
    assert {d["id"] for d in support.get("/devices").get_json()} == {grouped["id"]}
    assert [g["id"] for g in support.get("/device-groups").get_json()] == [group["id"]]
    members = support.get(f"/device-groups/{group['id']}/devices").get_json()
    assert [m["id"] for m in members] == [grouped["id"]]


def test_assignments_are_listed_and_removed(tenant: Tenant) -> None:
    user, client = tenant.user("operator")
    assignments = tenant.admin.get(f"/users/{user['id']}/role-assignments").get_json()
    assert [a["role"] for a in assignments] == ["operator"]
    removed = tenant.admin.request(
        "DELETE", f"/users/{user['id']}/role-assignments/{assignments[0]['id']}"
    )
    assert removed.status_code == 204
    assert client.get("/devices").status_code == 403
