"""Validation the first hour meets (issue 13): known hardware families only, no guessed
organization, decimals as numbers or strings, relative telemetry ranges, and a human
``message`` in every error body."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask
from werkzeug.exceptions import default_exceptions

from cloud.api.errors import http_error
from parameters import known_families
from tests.helpers import Client, Tenant

# --- hardware families ------------------------------------------------------------------------


def test_an_unknown_hardware_family_is_refused_listing_the_known_ones(tenant: Tenant) -> None:
    body = {"serial": "SN-" + secrets.token_hex(4), "organization_id": tenant.id}
    refused = tenant.admin.post("/devices", json={**body, "hardware_family": "nope"})
    assert refused.status_code == 422
    [why] = refused.get_json()["errors"]["json"]["hardware_family"]
    assert all(family in why for family in known_families()) and "'nope'" in why
    assert refused.get_json()["message"].startswith("json.hardware_family: Unknown")

    device = tenant.device()
    patched = tenant.admin.patch(f"/devices/{device['id']}", json={"hardware_family": "nope"})
    assert patched.status_code == 422 and "hardware_family" in patched.get_json()["errors"]["json"]
    for family in known_families():
        ok = tenant.admin.patch(f"/devices/{device['id']}", json={"hardware_family": family})
        assert ok.status_code == 200, ok.get_json()


# --- organization_id where it would be a guess --------------------------------------------------


def creations(tenant: Tenant) -> dict[str, dict[str, Any]]:
    """A valid body of every create route that takes ``organization_id``, without it."""
    user, _ = tenant.user()
    suffix = secrets.token_hex(4)
    return {
        "/sites": {"name": f"site-{suffix}"},
        "/devices": {"serial": f"SN-{suffix}", "hardware_family": "ac22-3p"},
        "/device-groups": {"name": f"group-{suffix}"},
        "/tariffs": {"name": f"tariff-{suffix}", "price_per_kwh": "0.30"},
        "/cards": {"uid": suffix.upper(), "user_id": user["id"]},
        "/clients": {"name": f"client-{suffix}"},
        "/roles": {"name": f"role-{suffix}", "permissions": ["devices:read"]},
        "/users": {"email": f"{suffix}@{tenant.slug}.test", "password": "a-long-enough-password"},
    }


def test_a_platform_admin_must_name_the_organization_of_what_it_creates(
    admin: Client, tenant: Tenant
) -> None:
    for path, body in creations(tenant).items():
        refused = admin.post(path, json=body)
        assert refused.status_code == 422, (path, refused.get_json())
        assert "organization_id" in refused.get_json()["errors"]["json"], path
        assert refused.get_json()["message"].startswith("organization_id:"), path
        created = admin.post(path, json={**body, "organization_id": tenant.id})
        assert created.status_code == 201, (path, created.get_json())
        assert created.get_json()["organization_id"] == tenant.id


def test_a_caller_of_one_organization_creates_in_it_by_default(tenant: Tenant) -> None:
    _, org_admin = tenant.user("organization-admin")
    for path, body in creations(tenant).items():
        created = org_admin.post(path, json=body)
        assert created.status_code == 201, (path, created.get_json())
        assert created.get_json()["organization_id"] == tenant.id, path


# --- decimals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [(0.39, "0.3900"), ("0.39", "0.3900"), (1, "1.0000"), (0.1234, "0.1234"), ("2", "2.0000")],
)
def test_prices_are_numbers_or_strings_and_answered_as_strings(
    tenant: Tenant, given: Any, stored: str
) -> None:
    body = {"name": "flat", "organization_id": tenant.id, "price_per_kwh": given}
    created = tenant.admin.post("/tariffs", json=body)
    assert created.status_code == 201, created.get_json()
    tariff = created.get_json()
    assert tariff["price_per_kwh"] == stored
    window = {"start": "22:00", "end": "06:00", "price_per_kwh": given}
    path = f"/tariffs/{tariff['id']}"
    patched = tenant.admin.patch(path, json={"price_per_kwh": given, "windows": [window]})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["windows"][0]["price_per_kwh"] == stored


@pytest.mark.parametrize("bad", [True, "abc", 0.12345, -1, [1], {"x": 1}, "NaN", None])
def test_a_price_that_is_no_decimal_is_refused_naming_it(tenant: Tenant, bad: Any) -> None:
    body = {"name": "flat", "organization_id": tenant.id, "price_per_kwh": bad}
    refused = tenant.admin.post("/tariffs", json=body)
    assert refused.status_code == 422, (bad, refused.get_json())
    assert "price_per_kwh" in refused.get_json()["errors"]["json"]
    assert refused.get_json()["message"].startswith("json.price_per_kwh:")


# --- telemetry ranges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"start": "-1h"},
        {"start": "-15m"},
        {"start": "-7d", "end": "now"},
        {"start": "-2w", "end": "-1d"},
        {"start": "-30s"},
        {"start": "2026-01-01T00:00:00Z", "end": "-1h"},
        {"end": "now"},
    ],
)
def test_telemetry_history_takes_relative_and_omitted_moments(
    tenant: Tenant, query: dict[str, str]
) -> None:
    device = tenant.device()
    response = tenant.admin.get(f"/devices/{device['id']}/telemetry", query_string=query)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == []


@pytest.mark.parametrize(
    "query",
    [
        {"start": "yesterday"},
        {"start": "-1y"},
        {"start": "1h"},
        {"start": "-h"},
        {"start": "-99999999w"},
        {"end": "soon"},
        {"start": "-1h", "end": "-2h"},
        {"start": "now", "end": "-1m"},
    ],
)
def test_telemetry_history_refuses_garbage_naming_the_parameter(
    tenant: Tenant, query: dict[str, str]
) -> None:
    device = tenant.device()
    response = tenant.admin.get(f"/devices/{device['id']}/telemetry", query_string=query)
    assert response.status_code == 422, response.get_json()
    errors = response.get_json()["errors"]["query"]
    named = "end" if "end" in errors else "start"
    assert named in query or named == "start"
    assert response.get_json()["message"].startswith(f"query.{named}:")


# --- every error has a message ----------------------------------------------------------------


def test_a_missing_field_is_named_in_the_message(tenant: Tenant) -> None:
    response = tenant.admin.post(
        "/devices", json={"hardware_family": "ac22-3p", "organization_id": tenant.id}
    )
    assert response.status_code == 422
    assert response.get_json()["message"] == "json.serial: Missing data for required field."


def test_errors_met_over_http_carry_a_message(app: Flask, client: Client, tenant: Tenant) -> None:
    admin = tenant.admin
    device = tenant.device()
    path = f"/devices/{device['id']}"
    answers = {
        400: admin.post("/devices", data=b'{"serial": ', content_type="application/json"),
        401: client.get("/devices"),
        404: admin.get("/devices/no-such-device"),
        405: admin.request("PUT", "/devices"),
        409: admin.post(
            "/devices",
            json={
                "serial": device["serial"],
                "hardware_family": "ac22-3p",
                "organization_id": tenant.id,
            },
        ),
        412: admin.request("PATCH", path, json={"name": "x"}, headers={"If-Match": '"stale"'}),
        413: admin.post(
            "/devices",
            data=b'{"name": "'
            + b"x" * app.extensions["ampfleet.settings"].max_request_bytes
            + b'"}',
            content_type="application/json",
        ),
        422: admin.post("/devices", json={}),
        428: admin.request("PATCH", path, json={"name": "x"}),
    }
    _, nobody = tenant.user()
    answers[403] = nobody.post("/devices", json={"serial": "x", "hardware_family": "ac22-3p"})
    for status, response in answers.items():
        assert response.status_code == status, (status, response.get_json())
        body = response.get_json()
        assert isinstance(body["message"], str) and body["message"].strip(), (status, body)
        assert body["code"] == status
    assert answers[405].headers.get("Allow")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 428, 429])
def test_every_http_error_body_has_a_message(app: Flask, status: int) -> None:
    with app.test_request_context():
        exc = default_exceptions[status]()
        body, code, _ = http_error(exc)
    assert code == status and body["code"] == status
    assert isinstance(body["message"], str) and body["message"].strip()
