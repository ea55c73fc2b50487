"""/devices/{id}/credentials on SQLite and on MariaDB (the ``app`` fixtures).

The password is returned once (issue, rotation), never by GET; the database holds an argon2id
hash only; every change is audited without the secret; 404 outside the caller's scope, 403
without the permission, 409 on conflicts, 428/412 on revocation without the current ETag.
"""

from __future__ import annotations

import json

from flask import Flask
from sqlalchemy import select

from cloud.audit.models import AuditEntry
from cloud.db import get_database
from cloud.devices.credentials import DeviceCredential
from tests.helpers import Tenant


def credentials_row(app: Flask, device_id: str) -> DeviceCredential | None:
    with get_database(app).session() as session:
        return session.get(DeviceCredential, device_id)


def audit_entries(app: Flask, device_id: str) -> list[AuditEntry]:
    with get_database(app).session() as session:
        stmt = (
            select(AuditEntry)
            .where(AuditEntry.object_type == "device", AuditEntry.object_id == device_id)
            .order_by(AuditEntry.id)
        )
        return list(session.scalars(stmt))


def test_issue_returns_the_secret_once_and_stores_only_its_hash(app: Flask, tenant: Tenant) -> None:
    admin = tenant.admin
    device = tenant.device()
    path = f"/devices/{device['id']}/credentials"
    assert admin.get(path).status_code == 404  # never issued

    issued = admin.post(path)
    assert issued.status_code == 201, issued.get_json()
    body = issued.get_json()
    settings = app.extensions["ampfleet.settings"]
    assert body["username"] == body["client_id"] == body["device_id"] == device["id"]
    assert body["broker_url"] == settings.broker_url
    assert body["state"] == "active" and body["broker_synced"] is True
    password = body["password"]
    assert isinstance(password, str) and len(password) >= 32
    assert body["_links"]["self"]["href"].endswith(path)

    shown = admin.get(path)
    assert shown.status_code == 200
    assert "password" not in shown.get_json() and password not in shown.get_data(as_text=True)
    assert shown.get_json()["state"] == "active" and shown.headers.get("ETag")

    row = credentials_row(app, device["id"])
    assert row is not None and row.secret_hash.startswith("$argon2id$")
    assert password not in row.secret_hash
    assert app.extensions["ampfleet.hasher"].verify(row.secret_hash, password)

    entries = audit_entries(app, device["id"])
    assert [e.action for e in entries][-1] == "device.credentials_issue"
    assert all(password not in json.dumps(e.details) for e in entries)

    again = admin.post(path)
    assert again.status_code == 409 and again.get_json()["code"] == 409
    unchanged = credentials_row(app, device["id"])
    assert unchanged is not None and unchanged.secret_hash == row.secret_hash


def test_rotation_replaces_the_secret(app: Flask, tenant: Tenant) -> None:
    admin = tenant.admin
    device = tenant.device()
    path = f"/devices/{device['id']}/credentials"
    assert admin.post(path + "/rotate").status_code == 404  # nothing to rotate yet
    first = admin.post(path).get_json()["password"]
    before = credentials_row(app, device["id"])

    rotated = admin.post(path + "/rotate")
    assert rotated.status_code == 200, rotated.get_json()
    second = rotated.get_json()["password"]
    assert second != first and rotated.get_json()["rotated_at"] is not None

    after = credentials_row(app, device["id"])
    assert before is not None and after is not None
    hasher = app.extensions["ampfleet.hasher"]
    assert not hasher.verify(after.secret_hash, first)
    assert hasher.verify(after.secret_hash, second)
    assert after.created_at == before.created_at
    assert audit_entries(app, device["id"])[-1].action == "device.credentials_rotate"
    assert second not in admin.get(path).get_data(as_text=True)


def test_revocation_needs_the_etag_and_can_be_followed_by_a_new_issue(
    app: Flask, tenant: Tenant
) -> None:
    admin = tenant.admin
    device = tenant.device()
    path = f"/devices/{device['id']}/credentials"
    assert admin.request("DELETE", path).status_code == 404  # nothing to revoke
    admin.post(path)
    etag = admin.get(path).headers["ETag"]

    missing = admin.request("DELETE", path)
    assert missing.status_code == 428 and missing.get_json()["code"] == 428
    stale = admin.request("DELETE", path, headers={"If-Match": '"stale"'})
    assert stale.status_code == 412
    revoked = admin.request("DELETE", path, headers={"If-Match": etag})
    assert revoked.status_code == 204

    shown = admin.get(path).get_json()
    assert shown["state"] == "revoked" and shown["revoked_at"] is not None
    assert admin.delete(path).status_code == 409  # already revoked
    assert admin.post(path + "/rotate").status_code == 409  # issue anew instead
    assert audit_entries(app, device["id"])[-1].action == "device.credentials_revoke"

    reissued = admin.post(path)
    assert reissued.status_code == 201
    shown = admin.get(path).get_json()
    assert (shown["state"], shown["revoked_at"], shown["rotated_at"]) == ("active", None, None)
    row = credentials_row(app, device["id"])
    assert row is not None and row.revoked_at is None
    assert app.extensions["ampfleet.hasher"].verify(
        row.secret_hash, reissued.get_json()["password"]
    )


def test_other_organizations_get_404_and_readers_get_403(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    device = tenant.device()
    path = f"/devices/{device['id']}/credentials"
    tenant.admin.post(path)

    _, stranger = other_tenant.user("organization-admin")
    for method, suffix in (("GET", ""), ("POST", ""), ("POST", "/rotate"), ("DELETE", "")):
        answer = stranger.request(method, path + suffix, headers={"If-Match": "*"})
        assert answer.status_code == 404, (method, suffix, answer.get_json())

    _, support = tenant.user("support")  # reads everything, holds no devices:credentials
    assert support.get(path).status_code == 200
    for method, suffix in (("POST", ""), ("POST", "/rotate"), ("DELETE", "")):
        answer = support.request(method, path + suffix, headers={"If-Match": "*"})
        assert answer.status_code == 403, (method, suffix)
        assert answer.get_json()["errors"] == {"permission": ["devices:credentials"]}

    _, operator = tenant.user("operator")  # holds devices:credentials
    assert operator.post(path + "/rotate").status_code == 200


def test_unknown_devices_and_bad_ids_answer_404(tenant: Tenant) -> None:
    admin = tenant.admin
    for device_id in ("no-such-device", "x" * 65, "a%00b", "%25"):
        for method, suffix in (("GET", ""), ("POST", ""), ("POST", "/rotate"), ("DELETE", "")):
            answer = admin.request(method, f"/devices/{device_id}/credentials{suffix}")
            assert answer.status_code == 404, (device_id, method, suffix)
            body = answer.get_json()
            assert body["code"] == 404 and body["status"] == "Not Found"


def test_decommissioned_devices_and_reserved_ids_get_no_credentials(
    app: Flask, tenant: Tenant
) -> None:
    admin = tenant.admin
    gone = tenant.device(state="decommissioned")
    answer = admin.post(f"/devices/{gone['id']}/credentials")
    assert answer.status_code == 409 and "decommissioned" in answer.get_json()["message"]

    service_user = app.extensions["ampfleet.settings"].broker_service_user
    clash = tenant.device(id=service_user)  # a valid device id, but the broker's own account
    answer = admin.post(f"/devices/{clash['id']}/credentials")
    assert answer.status_code == 409 and "reserved" in answer.get_json()["message"]
    assert admin.delete(f"/devices/{clash['id']}").status_code == 204


def test_credentials_go_with_the_device(app: Flask, tenant: Tenant) -> None:
    admin = tenant.admin
    device = tenant.device()
    admin.post(f"/devices/{device['id']}/credentials")
    assert admin.delete(f"/devices/{device['id']}").status_code == 204
    assert credentials_row(app, device["id"]) is None  # ON DELETE CASCADE


def test_the_routes_are_documented_with_their_permission(tenant: Tenant) -> None:
    spec = tenant.admin.get("/openapi.json").get_json()
    item = spec["paths"]["/api/v1/devices/{device_id}/credentials"]
    assert item["get"]["x-required-permission"] == "devices:read"
    for method in ("post", "delete"):
        assert item[method]["x-required-permission"] == "devices:credentials"
    rotate = spec["paths"]["/api/v1/devices/{device_id}/credentials/rotate"]["post"]
    assert rotate["x-required-permission"] == "devices:credentials"
    issued = item["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert "IssuedCredential" in json.dumps(issued)
