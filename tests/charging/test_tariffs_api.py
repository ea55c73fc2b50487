"""The tariffs API on SQLite and MariaDB: one tariff per charger, site or organization, windows
validated naming the field, read by session and billing readers, written with tariffs:write,
scoped to the organization; and the tariff it sets is the one that prices a session."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask

from tests.charging.test_sessions import Records, charger_id, event, started, stopped
from tests.helpers import Client, Tenant

NIGHT = [{"start": "22:00", "end": "06:00", "price_per_kwh": "0.18"}]


@pytest.fixture
def records(app: Flask, tenant: Tenant) -> Records:
    return Records(app, tenant)


@pytest.fixture
def operator(tenant: Tenant) -> Client:
    return tenant.user("operator")[1]


def create(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/tariffs", json=body)
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def test_a_tariff_per_organization_site_and_charger(records: Records, operator: Client) -> None:
    site = records.site("Europe/Berlin")
    device = records.tenant.device(site_id=site)
    org = create(operator, {"name": "standard", "price_per_kwh": "0.35"})
    assert (org["organization_id"], org["site_id"], org["device_id"]) == (
        records.tenant.id,
        None,
        None,
    )
    assert (org["price_per_kwh"], org["currency"], org["windows"]) == ("0.3500", "EUR", [])
    assert org["_links"]["self"]["href"].endswith(f"/tariffs/{org['id']}")
    at_site = create(
        operator, {"name": "night", "site_id": site, "price_per_kwh": "0.30", "windows": NIGHT}
    )
    assert at_site["windows"] == [{"start": "22:00", "end": "06:00", "price_per_kwh": "0.1800"}]
    assert at_site["_links"]["site"]["href"].endswith(f"/sites/{site}")
    one = create(
        operator,
        {"name": "fleet", "device_id": device["id"], "price_per_kwh": "0.2", "currency": "CHF"},
    )
    assert one["_links"]["device"]["href"].endswith(f"/devices/{device['id']}")
    for body, field in [
        ({"name": "again", "price_per_kwh": "1"}, "organization_id"),
        ({"name": "again", "site_id": site, "price_per_kwh": "1"}, "site_id"),
        ({"name": "again", "device_id": device["id"], "price_per_kwh": "1"}, "device_id"),
    ]:
        refused = operator.post("/tariffs", json=body)
        assert refused.status_code == 409 and field in refused.get_json()["errors"]["json"]
    listed = operator.get(
        "/tariffs", query_string={"organization_id": records.tenant.id}
    ).get_json()
    assert [t["id"] for t in listed] == [org["id"], at_site["id"], one["id"]]
    by_site = operator.get("/tariffs", query_string={"site_id": site}).get_json()
    assert [t["id"] for t in by_site] == [at_site["id"]]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": "x"}, {"price_per_kwh": ["Missing data for required field."]}),
        (
            {"name": "x", "price_per_kwh": "0.12345"},
            {"price_per_kwh": ["at most 4 decimal places"]},
        ),
        (
            {"name": "x", "price_per_kwh": "-1"},
            {"price_per_kwh": ["must be between 0 and 999999.9999"]},
        ),
        (
            {"name": "x", "price_per_kwh": "1", "currency": "eur"},
            {"currency": ["An ISO 4217 code in capitals, e.g. EUR."]},
        ),
        (
            # A JSON number is a price too (issue 13); a list is not.
            {"name": "x", "price_per_kwh": [0.3]},
            {"price_per_kwh": ['expected a decimal number such as "0.1800"']},
        ),
        (
            {"name": "x", "price_per_kwh": "1", "windows": [{"start": "9", "price_per_kwh": True}]},
            {
                "windows": {
                    "0": {
                        "start": ["expected a time of day HH:MM from 00:00 to 23:59"],
                        "end": ["missing"],
                        "price_per_kwh": ['expected a decimal number such as "0.1800"'],
                    }
                }
            },
        ),
        (
            {
                "name": "x",
                "price_per_kwh": "1",
                "windows": [{"start": "25:00", "end": "06:00", "price_per_kwh": "1"}],
            },
            {"windows": {"0": {"start": ["expected a time of day HH:MM from 00:00 to 23:59"]}}},
        ),
        (
            {
                "name": "x",
                "price_per_kwh": "1",
                "windows": [*NIGHT, {"start": "05:00", "end": "07:00", "price_per_kwh": "0.2"}],
            },
            {"windows": {"1": ["overlaps windows.0 (22:00-06:00); windows must not overlap"]}},
        ),
        (
            {"name": "x", "price_per_kwh": "1", "windows": "night"},
            {"windows": ["expected a list of {start, end, price_per_kwh}"]},
        ),
    ],
)
def test_bad_tariffs_are_refused_naming_the_field(
    operator: Client, body: dict[str, Any], errors: dict[str, Any]
) -> None:
    response = operator.post("/tariffs", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"]["json"] == errors


def test_the_scope_must_be_of_the_tariffs_organization(
    records: Records, operator: Client, other_tenant: Tenant
) -> None:
    theirs = other_tenant.device()
    their_site = other_tenant.admin.created(
        "/sites", {"organization_id": other_tenant.id, "name": "far"}
    )
    site = records.site("UTC")
    device = records.tenant.device(site_id=site)
    for body, field in [
        ({"device_id": theirs["id"]}, "device_id"),
        ({"site_id": their_site["id"]}, "site_id"),
        ({"site_id": site, "device_id": device["id"]}, "device_id"),
        ({"organization_id": other_tenant.id}, "organization_id"),
    ]:
        response = operator.post("/tariffs", json={"name": "x", "price_per_kwh": "1", **body})
        assert response.status_code == 422 and field in response.get_json()["errors"]["json"]


def test_who_reads_and_who_writes(records: Records, operator: Client, other_tenant: Tenant) -> None:
    tariff = create(operator, {"name": "standard", "price_per_kwh": "0.35"})
    theirs = create(other_tenant.user("operator")[1], {"name": "theirs", "price_per_kwh": "0.1"})
    _, support = records.tenant.user("support")  # reads sessions and billing, writes nothing
    _, installer = records.tenant.user("installer")
    assert [t["id"] for t in support.get("/tariffs").get_json()] == [tariff["id"]]
    assert support.get(f"/tariffs/{tariff['id']}").status_code == 200
    assert support.get(f"/tariffs/{theirs['id']}").status_code == 404
    assert operator.get(f"/tariffs/{theirs['id']}").status_code == 404
    assert installer.get("/tariffs").status_code == 403
    assert support.post("/tariffs", json={"name": "x", "price_per_kwh": "1"}).status_code == 403
    assert support.patch(f"/tariffs/{tariff['id']}", json={"name": "y"}).status_code == 403
    assert operator.patch(f"/tariffs/{theirs['id']}", json={"name": "y"}).status_code == 404
    assert operator.delete(f"/tariffs/{theirs['id']}").status_code == 404


def test_changing_and_deleting_a_tariff(records: Records, operator: Client) -> None:
    tariff = create(operator, {"name": "standard", "price_per_kwh": "0.35"})
    path = f"/tariffs/{tariff['id']}"
    assert operator.request("PATCH", path, json={"name": "y"}).status_code == 428  # no If-Match
    changed = operator.patch(path, json={"price_per_kwh": "0.4", "windows": NIGHT})
    assert changed.status_code == 200, changed.get_json()
    assert (
        changed.get_json()["price_per_kwh"],
        changed.get_json()["windows"][0]["price_per_kwh"],
    ) == ("0.4000", "0.1800")
    bad = operator.patch(
        path, json={"windows": [{"start": "08:00", "end": "08:00", "price_per_kwh": "1"}]}
    )
    assert bad.status_code == 422 and bad.get_json()["errors"]["json"] == {
        "windows": {"0": {"end": ["must differ from start (a window cannot be empty)"]}}
    }
    assert operator.patch(path, json={"site_id": 1}).status_code == 422  # the scope is fixed
    audit = records.tenant.admin.get(
        "/audit-log", query_string={"object_id": tariff["id"], "object_type": "tariff"}
    ).get_json()
    assert {"tariff.create", "tariff.update"} <= {e["action"] for e in audit}
    assert operator.delete(path).status_code == 204
    assert operator.get(path).status_code == 404


def test_the_tariff_set_through_the_api_prices_the_session(
    records: Records, operator: Client
) -> None:
    site = records.site("Europe/Berlin")
    device = records.device(site_id=site)
    create(operator, {"name": "night", "site_id": site, "price_per_kwh": "0.30", "windows": NIGHT})
    # 21:00-23:00 Berlin time in winter: one hour at each price, 4 kWh each.
    stop = dt.datetime(2026, 1, 15, 22, 0, tzinfo=dt.UTC)
    stop_ms = int(stop.timestamp() * 1000)
    sid = charger_id()
    records.apply(device, event("charging.started", started(sid), stop_ms - 7_200_000))
    records.apply(device, event("charging.stopped", stopped(sid, 8000.0, 7200), stop_ms))
    done = records.session(device, sid)
    assert (done.cost_cents, done.currency) == (4 * 30 + 4 * 18, "EUR")
    shown = operator.get(f"/sessions/{done.id}").get_json()
    assert shown["cost_cents"] == 192 and shown["_links"]["tariff"]["href"].endswith(
        f"/tariffs/{done.tariff_id}"
    )
