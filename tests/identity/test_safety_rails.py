"""Safety rails: nobody can lock the last platform admin out through the API.

The session's app has exactly one platform admin (the ``admin`` fixture), so every test here
tries to remove it and must be refused; a second platform admin made by a test is removed again.
"""

from __future__ import annotations

import secrets
from typing import Any

from cloud.identity.permissions import CATALOGUE, SYSTEM_ROLES
from tests.helpers import ADMIN_EMAIL, PASSWORD, Client, Tenant, role_id


def _me(admin: Client) -> dict[str, Any]:
    me: dict[str, Any] = admin.get("/auth/me").get_json()
    return me


def _refused(response: Any) -> str:
    assert response.status_code == 409, response.data
    message: str = response.get_json()["message"]
    assert "platform admin" in message
    return message


def _platform_user(admin: Client, role: str) -> tuple[dict[str, Any], Client]:
    """A user of the platform organization holding the system role ``role``."""
    email = f"{secrets.token_hex(5)}@platform.test"
    user = admin.created(
        "/users",
        {
            "email": email,
            "password": PASSWORD,
            "organization_id": _me(admin)["organization_id"],
            "roles": [{"role_id": role_id(admin, role)}],
        },
    )
    return user, Client(admin.http).signed_in(email, PASSWORD)


def test_the_last_platform_admin_cannot_unassign_or_deactivate_itself(admin: Client) -> None:
    me = _me(admin)
    platform = role_id(admin, "platform-admin")
    held = [
        a
        for a in admin.get(f"/users/{me['id']}/role-assignments").get_json()
        if a["role_id"] == platform
    ]
    assert held
    for assignment in held:
        _refused(admin.delete(f"/users/{me['id']}/role-assignments/{assignment['id']}"))
    _refused(admin.patch(f"/users/{me['id']}", json={"is_active": False}))
    assert admin.get("/users", query_string={"email": ADMIN_EMAIL}).status_code == 200
    assert admin.get(f"/users/{me['id']}").get_json()["is_active"] is True


def test_another_administrator_cannot_remove_the_last_platform_admin(admin: Client) -> None:
    me = _me(admin)
    _, org_admin = _platform_user(admin, "organization-admin")
    platform = role_id(admin, "platform-admin")
    assignment = next(
        a
        for a in admin.get(f"/users/{me['id']}/role-assignments").get_json()
        if a["role_id"] == platform
    )
    _refused(org_admin.delete(f"/users/{me['id']}/role-assignments/{assignment['id']}"))
    _refused(org_admin.patch(f"/users/{me['id']}", json={"is_active": False}))
    _refused(org_admin.delete(f"/users/{me['id']}"))
    assert admin.get("/auth/me").status_code == 200


def test_a_platform_admin_who_is_not_the_last_may_go(admin: Client) -> None:
    second, _ = _platform_user(admin, "platform-admin")
    deactivated = admin.patch(f"/users/{second['id']}", json={"is_active": False})
    assert deactivated.status_code == 200
    assert admin.delete(f"/users/{second['id']}").status_code == 204


def test_the_platform_admin_role_keeps_what_it_needs_to_administer(admin: Client) -> None:
    platform = role_id(admin, "platform-admin")
    stripped = admin.patch(f"/roles/{platform}", json={"permissions": ["devices:read"]})
    assert stripped.status_code == 409, stripped.get_json()
    errors = stripped.get_json()["errors"]["json"]["permissions"][0]
    assert "platform:admin" in errors and "users:write" in errors
    assert admin.get("/users").status_code == 200
    # Above the floor the role stays editable: drop a permission, then give it back.
    without = sorted(set(CATALOGUE) - {"metrics:read"})
    assert admin.patch(f"/roles/{platform}", json={"permissions": without}).status_code == 200
    restored = admin.patch(f"/roles/{platform}", json={"permissions": sorted(CATALOGUE)})
    assert restored.status_code == 200


def test_every_system_role_floor_is_inside_its_role() -> None:
    from cloud.identity.permissions import SYSTEM_ROLE_FLOORS

    for name, floor in SYSTEM_ROLE_FLOORS.items():
        assert floor <= SYSTEM_ROLES[name][1], name


def test_the_organization_admin_role_cannot_lose_user_management(admin: Client) -> None:
    org_role = role_id(admin, "organization-admin")
    refused = admin.patch(f"/roles/{org_role}", json={"permissions": ["devices:read"]})
    assert refused.status_code == 409
    assert "users:write" in refused.get_json()["errors"]["json"]["permissions"][0]


def test_duplicate_role_assignments_are_refused(tenant: Tenant) -> None:
    user, _ = tenant.user("operator")
    operator = role_id(tenant.admin, "operator")
    again = tenant.admin.post(f"/users/{user['id']}/role-assignments", json={"role_id": operator})
    assert again.status_code == 409, again.get_json()
    assert "role_id" in again.get_json()["errors"]["json"]
    assert len(tenant.admin.get(f"/users/{user['id']}/role-assignments").get_json()) == 1
    twice = tenant.admin.post(
        "/users",
        json={
            "email": f"{secrets.token_hex(5)}@{tenant.slug}.test",
            "organization_id": tenant.id,
            "roles": [{"role_id": operator}, {"role_id": operator}],
        },
    )
    assert twice.status_code == 409, twice.get_json()
    assert "roles.1.role_id" in twice.get_json()["errors"]["json"]


def test_deleting_the_organization_of_the_last_platform_grant_is_refused(admin: Client) -> None:
    me, platform = _me(admin), role_id(admin, "platform-admin")
    other = Tenant.create(admin)
    moved = admin.created(
        f"/users/{me['id']}/role-assignments",
        {"role_id": platform, "organization_id": other.id},
    )
    original = [
        a
        for a in admin.get(f"/users/{me['id']}/role-assignments").get_json()
        if a["role_id"] == platform and a["id"] != moved["id"]
    ]
    for assignment in original:  # allowed: the same user still holds it through ``moved``
        assert (
            admin.delete(f"/users/{me['id']}/role-assignments/{assignment['id']}").status_code
            == 204
        )
    try:
        _refused(admin.delete(f"/organizations/{other.id}"))
    finally:
        for assignment in original:
            admin.created(
                f"/users/{me['id']}/role-assignments",
                {"role_id": platform, "organization_id": assignment["organization_id"]},
            )
    assert admin.delete(f"/users/{me['id']}/role-assignments/{moved['id']}").status_code == 204
    assert admin.delete(f"/organizations/{other.id}").status_code == 204
