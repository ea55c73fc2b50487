"""Production batches: created by one admin, approved by another (four eyes), both audited;
what a batch refuses; its serials and their states; MAC pools."""

from __future__ import annotations

from tests.helpers import Tenant
from tests.manufacturing.support import approved_batch, mac_pool, prefix


def test_a_batch_is_approved_by_another_admin_not_its_creator(tenant: Tenant) -> None:
    admin = tenant.admin
    first = prefix()
    batch = admin.created(
        "/batches",
        {
            "organization_id": tenant.id,
            "hardware_family": "ac22-3p",
            "count": 3,
            "serial_range": {"prefix": first, "first": 8, "last": 10, "digits": 6},
            "expected": [{"serial": f"{first}000009", "chip_id": "58:CF:79:00:00:09"}],
        },
    )
    assert batch["state"] == "pending" and batch["count"] == 3
    serials = admin.get(f"/batches/{batch['id']}/serials").get_json()
    assert [s["serial"] for s in serials] == [f"{first}{n:06d}" for n in (8, 9, 10)]
    assert {s["state"] for s in serials} == {"pending"}
    assert serials[1]["expected_chip_id"] == "58cf79000009"

    refused = admin.post(f"/batches/{batch['id']}/approve")
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["errors"]["reason"] == ["same_approver"]
    assert "another admin must approve it" in body["message"]

    _, other = tenant.user("organization-admin")
    approved = other.post(f"/batches/{batch['id']}/approve")
    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["state"] == "approved"
    assert approved.get_json()["approved_by_name"] != batch["created_by_name"]
    again = other.post(f"/batches/{batch['id']}/approve")
    assert again.status_code == 409 and again.get_json()["errors"]["reason"] == ["state"]
    ready = admin.get(f"/batches/{batch['id']}/serials", query_string={"state": "approved"})
    assert len(ready.get_json()) == 3

    log = admin.get(
        "/audit-log", query_string={"object_type": "production_batch", "object_id": batch["id"]}
    ).get_json()
    actions = {entry["action"]: entry["actor_name"] for entry in log}
    assert set(actions) == {"batch.create", "batch.approve"}
    assert actions["batch.create"] != actions["batch.approve"]


def test_what_a_batch_refuses_naming_the_field(tenant: Tenant) -> None:
    admin = tenant.admin
    base = {"organization_id": tenant.id, "hardware_family": "ac22-3p"}

    def refused(body: dict[str, object], status: int, field: str) -> str:
        answer = admin.post("/batches", json={**base, **body})
        assert answer.status_code == status, answer.get_json()
        errors = answer.get_json()["errors"]["json"]
        assert field in errors, errors
        return str(answer.get_json()["message"])

    first = prefix()
    serials = [f"{first}1", f"{first}2"]
    assert "count is 3 but 2 serials" in refused({"count": 3, "serials": serials}, 422, "count")
    refused({"count": 2, "serials": serials, "hardware_family": "toaster"}, 422, "hardware_family")
    refused({"count": 2}, 422, "serials")  # neither a list nor a range
    refused({"count": 2, "serials": [serials[0], serials[0]]}, 422, "serials")
    refused({"count": 1, "serials": ["bad/serial"]}, 422, "serials")
    refused(
        {"count": 2, "serials": serials, "expected": [{"serial": "elsewhere", "chip_id": "aa"}]},
        422,
        "expected.0.serial",
    )
    admin.created("/batches", {**base, "count": 2, "serials": serials})
    overlapping = {"count": 2, "serials": [serials[1], f"{first}3"]}
    assert serials[1] in refused(overlapping, 409, "serials")
    tenant.device(serial=f"{first}9")  # registered by hand: not a batch's
    refused({"count": 1, "serials": [f"{first}9"]}, 409, "serials")


def test_other_organizations_do_not_see_a_batch(tenant: Tenant, other_tenant: Tenant) -> None:
    _, approver = tenant.user("organization-admin")
    batch, _ = approved_batch(tenant, approver, count=1)
    _, outsider = other_tenant.user("organization-admin")
    assert outsider.get(f"/batches/{batch['id']}").status_code == 404
    assert outsider.post(f"/batches/{batch['id']}/approve").status_code == 404
    assert batch["id"] not in [b["id"] for b in outsider.get("/batches").get_json()]


def test_mac_pools_refuse_overlaps_and_bad_ranges(tenant: Tenant, other_tenant: Tenant) -> None:
    pool = mac_pool(tenant, size=16)
    assert pool["size"] == 16 and pool["free"] == 16 and pool["next"] == pool["first"]
    assert pool["last"].endswith(":0F")
    # Any overlap, in any organization: a MAC is global.
    inside = pool["first"][:-2] + "08"
    clash = other_tenant.admin.post(
        "/mac-pools", json={"organization_id": other_tenant.id, "first": inside, "size": 100}
    )
    assert clash.status_code == 409 and "overlaps pool" in clash.get_json()["message"]
    for body, field in (
        ({"first": "01:00:5E:00:00:00", "size": 4}, "first"),  # multicast
        ({"first": "02:00:00:00:00:10", "last": "02:00:00:00:00:01"}, "last"),
        ({"first": "02:00:00:00:00:10"}, "size"),  # neither last nor size
        ({"first": "not-a-mac-at-all"}, "first"),
    ):
        answer = tenant.admin.post("/mac-pools", json={"organization_id": tenant.id, **body})
        assert answer.status_code == 422, (body, answer.get_json())
        assert field in answer.get_json()["errors"]["json"], answer.get_json()


def test_approval_by_registration_is_the_embedded_default_only() -> None:
    from cloud.settings import Settings

    assert Settings.load(environ={}).device_approval == "registration"
    external = Settings.load({"broker": "external"}, environ={})
    assert external.device_approval == "whitelist"
    chosen = Settings.load({"broker": "external", "device_approval": "registration"}, environ={})
    assert chosen.device_approval == "registration"
