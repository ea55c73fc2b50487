"""Charging history and billing reports on SQLite and MariaDB: the CSV export of a month matches
the sessions in the database to the Wh and the cent (month boundaries in UTC, other
organizations left out), the monthly totals add the same figures up, and a user sees their own
sessions."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import math
import secrets
import uuid
from typing import Any

import pytest
from flask import Flask

from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.charging.reports import CSV_COLUMNS, HISTORY_COLUMNS, BillingRow, month_of
from cloud.db import get_database, utcnow
from tests.charging.test_access import person
from tests.helpers import Client, Tenant
from tests.services.smtp import SmtpServer


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[misc]


@dataclasses.dataclass
class World:
    """A billed organization with its sessions around November 2026, and a stranger's."""

    tenant: Tenant
    billing: Client
    alice: dict[str, Any]
    alice_client: Client
    bob: dict[str, Any]
    card: dict[str, Any]
    devices: list[str]
    site_id: int
    sessions: dict[str, ChargingSession]  # by name


def add_session(app: Flask, **fields: Any) -> ChargingSession:
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "charger_session_id": secrets.token_hex(6),
        "source": SessionSource.APP,
        "state": SessionState.COMPLETED,
        **fields,
    }
    if values["state"] is SessionState.COMPLETED:
        values.setdefault("stop_reason", "ev_disconnected")
        values.setdefault("duration_s", 3600)
    with get_database(app).transaction() as session:
        record = ChargingSession(**values)
        session.add(record)
    return record


@pytest.fixture
def world(app: Flask, admin: Client, tenant: Tenant, other_tenant: Tenant) -> World:
    site = admin.created(
        "/sites", {"name": "s-" + secrets.token_hex(3), "organization_id": tenant.id}
    )
    empty = admin.created(
        "/sites", {"name": "e-" + secrets.token_hex(3), "organization_id": tenant.id}
    )
    on_site = tenant.device(site_id=site["id"])["id"]
    elsewhere = tenant.device()["id"]
    _, billing = tenant.user("organization-admin")
    # A plain user: sessions:read only where no charger is, so they see their own sessions.
    alice, alice_client = tenant.user("owner", site_id=empty["id"])
    bob, _ = tenant.user()
    card = admin.created(
        "/cards", {"uid": "04a1b2c3", "user_id": alice["id"], "organization_id": tenant.id}
    )
    lost = admin.created(
        "/cards", {"uid": "deadbeef", "user_id": bob["id"], "organization_id": tenant.id}
    )
    org = {"organization_id": tenant.id}
    at_site = {"device_id": on_site, "site_id": site["id"], **org}
    away = {"device_id": elsewhere, **org}
    alice_card = {"user_id": alice["id"], "card_id": card["id"], "source": SessionSource.RFID}
    sessions = {
        # The last second of October: not November's.
        "october": add_session(
            app, **at_site, **alice_card, id_tag="04A1B2C3",
            started_at=utc(2026, 10, 31, 22), stopped_at=utc(2026, 10, 31, 23, 59, 59),
            energy_wh=1000.0, cost_cents=30, currency="EUR",
        ),
        # Started in October, stopped at November's first instant: November's.
        "first": add_session(
            app, **at_site, **alice_card, id_tag="04A1B2C3",
            started_at=utc(2026, 10, 31, 23), stopped_at=utc(2026, 11, 1),
            energy_wh=12345.0, cost_cents=370, currency="EUR", stop_reason="local",
        ),
        "half": add_session(
            app, **away, user_id=bob["id"], id_tag="app-" + "a" * 12,
            started_at=utc(2026, 11, 15, 8), stopped_at=utc(2026, 11, 15, 9, 30),
            energy_wh=999.5, cost_cents=1, currency="EUR", stop_reason="remote",
        ),
        "francs": add_session(
            app, **away, user_id=alice["id"], id_tag="app-" + "b" * 12,
            started_at=utc(2026, 11, 20, 18), stopped_at=utc(2026, 11, 20, 20),
            energy_wh=7400.25, cost_cents=1999, currency="CHF",
        ),
        # A card deleted since: the export shows the uid the charger sent.
        "deleted_card": add_session(
            app, **away, user_id=bob["id"], card_id=lost["id"], source=SessionSource.RFID,
            id_tag="DEADBEEF", started_at=utc(2026, 11, 21), stopped_at=utc(2026, 11, 21, 1),
            energy_wh=1234.5, cost_cents=45, currency="EUR", stop_reason="card_refused",
        ),
        # Free charging, no user, no tariff; its last second is November's.
        "free": add_session(
            app, **at_site, source=SessionSource.FREE,
            started_at=utc(2026, 11, 30, 23), stopped_at=utc(2026, 11, 30, 23, 59, 59),
            energy_wh=0.4, stop_reason="schedule_end",
        ),
        "december": add_session(
            app, **away, user_id=bob["id"], started_at=utc(2026, 11, 30, 23),
            stopped_at=utc(2026, 12, 1), energy_wh=500.0, cost_cents=10, currency="EUR",
        ),
        "running": add_session(
            app, **at_site, user_id=bob["id"], state=SessionState.ACTIVE,
            started_at=utc(2026, 11, 10), energy_wh=300.0,
        ),
        "refused": add_session(
            app, **at_site, user_id=alice["id"], state=SessionState.REFUSED,
            source=SessionSource.RFID, started_at=utc(2026, 11, 11), stopped_at=utc(2026, 11, 11),
            stop_reason="card_refused",
        ),
    }  # fmt: skip
    assert admin.delete(f"/cards/{lost['id']}").status_code == 204
    stranger, _ = other_tenant.user()
    sessions["stranger"] = add_session(
        app,
        device_id=other_tenant.device()["id"],
        organization_id=other_tenant.id,
        user_id=stranger["id"],
        started_at=utc(2026, 11, 5),
        stopped_at=utc(2026, 11, 5, 2),
        energy_wh=5000.0,
        cost_cents=150,
        currency="EUR",
    )
    return World(
        tenant, billing, alice, alice_client, bob, card, [on_site, elsewhere], site["id"], sessions
    )


NOVEMBER = ("first", "half", "francs", "deleted_card", "free")


def export(client: Client, **query: Any) -> list[dict[str, str]]:
    response = client.get("/reports/sessions.csv", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    response.close()  # ends the streamed request: its database session closes (as a server does)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def whole_wh(energy_wh: float) -> int:
    return math.floor(energy_wh + 0.5)  # half up; the values here are exact binary fractions


def test_the_csv_of_a_month_matches_the_database_to_the_wh_and_the_cent(
    app: Flask, world: World
) -> None:
    rows = export(world.billing, month="2026-11")
    by_id = {row["session_id"]: row for row in rows}
    expected = {world.sessions[name].id: world.sessions[name] for name in NOVEMBER}
    assert set(by_id) == set(expected)
    # Ordered by stop time.
    assert [row["session_id"] for row in rows] == [world.sessions[n].id for n in NOVEMBER]
    for session_id, record in expected.items():
        row = by_id[session_id]
        assert row["charger"] == record.device_id
        assert row["reason"] == record.stop_reason
        kwh, cost = row["kwh"], row["cost"]
        assert len(kwh.split(".")[1]) == 3
        assert int(kwh.replace(".", "")) == whole_wh(record.energy_wh)
        if record.cost_cents is None:
            assert cost == "" and row["currency"] == ""
        else:
            assert len(cost.split(".")[1]) == 2
            assert int(cost.replace(".", "")) == record.cost_cents
            assert row["currency"] == record.currency
    first = by_id[world.sessions["first"].id]
    assert first["start"] == "2026-10-31T23:00:00Z" and first["stop"] == "2026-11-01T00:00:00Z"
    assert first["user_email"] == world.alice["email"] and first["card_uid"] == "04A1B2C3"
    assert (first["kwh"], first["cost"], first["currency"]) == ("12.345", "3.70", "EUR")
    assert by_id[world.sessions["half"].id]["kwh"] == "1.000"  # 999.5 Wh, half up
    assert by_id[world.sessions["half"].id]["cost"] == "0.01"
    assert by_id[world.sessions["francs"].id]["kwh"] == "7.400"
    free = by_id[world.sessions["free"].id]
    assert (free["user_email"], free["card_uid"], free["kwh"]) == ("", "", "0.000")
    assert free["stop"] == "2026-11-30T23:59:59Z"
    assert by_id[world.sessions["deleted_card"].id]["card_uid"] == "DEADBEEF"
    # The month's totals, to the Wh and the cent.
    total_wh = sum(int(r["kwh"].replace(".", "")) for r in rows)
    assert (
        total_wh
        == sum(whole_wh(r.energy_wh) for r in expected.values())
        == 12345 + 1000 + 7400 + 1235 + 0
    )
    eur = sum(int(r["cost"].replace(".", "")) for r in rows if r["currency"] == "EUR")
    assert eur == 370 + 1 + 45

    october = export(world.billing, month="2026-10")
    assert [r["session_id"] for r in october] == [world.sessions["october"].id]
    december = export(world.billing, month="2026-12")
    assert [r["session_id"] for r in december] == [world.sessions["december"].id]


def test_the_export_narrows_by_site_and_user(world: World) -> None:
    at_site = export(world.billing, month="2026-11", site_id=world.site_id)
    assert {r["session_id"] for r in at_site} == {
        world.sessions["first"].id,
        world.sessions["free"].id,
    }
    alices = export(world.billing, month="2026-11", user_id=world.alice["id"])
    assert {r["session_id"] for r in alices} == {
        world.sessions["first"].id,
        world.sessions["francs"].id,
    }


def test_the_monthly_summary_adds_up_the_exports_rows(world: World) -> None:
    response = world.billing.get("/reports/monthly", query_string={"month": "2026-11"})
    assert response.status_code == 200, response.get_json()
    summary = response.get_json()
    assert summary["month"] == "2026-11"
    assert summary["from"].startswith("2026-11-01T00:00:00") and summary["to"].startswith(
        "2026-12-01T00:00:00"
    )
    [org] = summary["organizations"]  # the stranger's organization is not ours to see
    assert org["organization_id"] == world.tenant.id
    assert (org["sessions"], org["energy_wh"], org["kwh"]) == (5, 21980, "21.980")
    assert org["unpriced_sessions"] == 1
    assert org["costs"] == [
        {"currency": "CHF", "sessions": 1, "cost_cents": 1999, "cost": "19.99"},
        {"currency": "EUR", "sessions": 3, "cost_cents": 416, "cost": "4.16"},
    ]
    users = {u["user_id"]: u for u in summary["users"]}
    assert set(users) == {world.alice["id"], world.bob["id"], None}
    alice = users[world.alice["id"]]
    assert alice["email"] == world.alice["email"]
    assert (alice["sessions"], alice["kwh"]) == (2, "19.745")
    assert [(c["currency"], c["cost"]) for c in alice["costs"]] == [
        ("CHF", "19.99"),
        ("EUR", "3.70"),
    ]
    bob = users[world.bob["id"]]
    assert (bob["sessions"], bob["energy_wh"], bob["costs"][0]["cost_cents"]) == (2, 2235, 46)
    assert users[None]["sessions"] == 1 and users[None]["costs"] == []
    rows = export(world.billing, month="2026-11")
    assert sum(int(r["kwh"].replace(".", "")) for r in rows) == org["energy_wh"]
    assert summary["_links"]["csv"]["href"].endswith("/reports/sessions.csv?month=2026-11")


def test_reports_need_billing_and_a_month(world: World) -> None:
    refused = world.alice_client.get("/reports/sessions.csv", query_string={"month": "2026-11"})
    assert refused.status_code == 403
    assert refused.get_json()["errors"]["permission"] == ["billing:read"]
    assert world.alice_client.get("/reports/monthly").status_code == 403
    for bad in ("2026-13", "2026-1", "26-11", "2026-11-01", "0000-01", "november"):
        for path in ("/reports/sessions.csv", "/reports/monthly"):
            response = world.billing.get(path, query_string={"month": bad})
            assert response.status_code == 422, (path, bad)
            assert "month" in response.get_json()["errors"]["query"]
    # Without a month: the current one (in UTC, read around the call in case it turns).
    before = month_of(utcnow())
    response = world.billing.get("/reports/sessions.csv")
    after = month_of(utcnow())
    assert response.status_code == 200 and response.get_data()  # read: the stream ends
    response.close()
    disposition = response.headers["Content-Disposition"]
    assert disposition in {f'attachment; filename="sessions-{m}.csv"' for m in (before, after)}


def test_the_history_filters_and_shows_a_user_their_own_sessions(world: World) -> None:
    def ids(client: Client, **query: Any) -> set[str]:
        response = client.get("/sessions", query_string={"page_size": 100, **query})
        assert response.status_code == 200, response.get_json()
        return {s["id"] for s in response.get_json()}

    s = world.sessions
    ours = {k: v.id for k, v in s.items() if k != "stranger"}
    assert ids(world.billing) == set(ours.values())
    alice_ids = {s[n].id for n in ("october", "first", "francs", "refused")}
    assert ids(world.alice_client) == alice_ids
    assert ids(world.alice_client, organization_id=world.tenant.id) == alice_ids
    assert ids(world.billing, device_id=world.devices[0]) == {
        s[n].id for n in ("october", "first", "free", "running", "refused")
    }
    assert ids(world.billing, user_id=world.bob["id"]) == {
        s[n].id for n in ("half", "deleted_card", "december", "running")
    }
    assert ids(world.billing, card_id=world.card["id"]) == {s["october"].id, s["first"].id}
    assert ids(world.billing, site_id=world.site_id, state="completed") == {
        s[n].id for n in ("october", "first", "free")
    }
    assert ids(world.billing, source="free") == {s["free"].id}
    assert ids(
        world.billing, **{"from": "2026-11-15T00:00:00Z", "to": "2026-11-30T23:00:00+00:00"}
    ) == {s[n].id for n in ("half", "francs", "deleted_card")}
    newest = world.billing.get("/sessions", query_string={"page_size": 1}).get_json()
    assert newest[0]["id"] in {s["free"].id, s["december"].id}  # both started 30 Nov 23:00
    bad = world.billing.get("/sessions", query_string={"from": "yesterday"})
    assert bad.status_code == 422 and "from" in bad.get_json()["errors"]["query"]


@pytest.mark.parametrize("text", ["=HYPERLINK(1)@x.test", "+1@x.test", "-2", "@SUM(A1)"])
def test_a_cell_a_spreadsheet_would_run_is_quoted(text: str) -> None:
    row = BillingRow(
        session_id="s",
        organization_id=1,
        device_id="d",
        user_id=1,
        user_email=text,
        card_uid=text,
        started_at=None,
        stopped_at=None,
        stop_reason="local",
        energy_wh=1000,
        cost_cents=30,
        currency="EUR",
    )
    cells = row.csv_fields()
    assert cells[2] == cells[3] == "'" + text


# The billing CSV's columns before issue 13: they keep their positions, new ones come after.
BILLING_COLUMNS_OF_RELEASE_1 = (
    "session_id",
    "charger",
    "user_email",
    "card_uid",
    "start",
    "stop",
    "reason",
    "kwh",
    "cost",
    "currency",
)


def test_the_billing_csv_names_each_sessions_organization_and_site(world: World) -> None:
    assert CSV_COLUMNS[: len(BILLING_COLUMNS_OF_RELEASE_1)] == BILLING_COLUMNS_OF_RELEASE_1
    assert CSV_COLUMNS[len(BILLING_COLUMNS_OF_RELEASE_1) :] == (
        "organization_id",
        "organization",
        "site_id",
        "site",
    )
    site = world.tenant.admin.get(f"/sites/{world.site_id}").get_json()
    by_id = {r["session_id"]: r for r in export(world.billing, month="2026-11")}
    for name in NOVEMBER:
        row = by_id[world.sessions[name].id]
        assert row["organization_id"] == str(world.tenant.id)
        assert row["organization"] == f"Tenant {world.tenant.slug}"
        if world.sessions[name].site_id is None:
            assert (row["site_id"], row["site"]) == ("", ""), name
        else:
            assert (row["site_id"], row["site"]) == (str(site["id"]), site["name"]), name
    # The monthly summary still adds up the same rows.
    summary = world.billing.get("/reports/monthly", query_string={"month": "2026-11"}).get_json()
    [org] = summary["organizations"]
    assert org["sessions"] == len(by_id) and org["energy_wh"] == sum(
        int(r["kwh"].replace(".", "")) for r in by_id.values()
    )


def history_export(client: Client, **query: Any) -> list[dict[str, str]]:
    response = client.get("/sessions.csv", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "text/csv"
    text = response.get_data(as_text=True)
    response.close()  # ends the streamed request: its database session closes (as a server does)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == HISTORY_COLUMNS
    return list(reader)


def test_a_user_exports_their_own_history_without_billing(world: World) -> None:
    s = world.sessions
    # Alice holds the owner role on a site without chargers: her own sessions only.
    mine = history_export(world.alice_client)
    assert {r["session_id"] for r in mine} == {
        s[n].id for n in ("october", "first", "francs", "refused")
    }
    assert all(r["user_email"] == world.alice["email"] for r in mine)
    first = next(r for r in mine if r["session_id"] == s["first"].id)
    assert (first["kwh"], first["cost"], first["state"], first["source"]) == (
        "12.345",
        "3.70",
        "completed",
        "rfid",
    )
    assert first["site_id"] == str(world.site_id)
    # The history's filters apply, and asking for someone else's shows nothing more.
    completed = history_export(
        world.alice_client, state="completed", **{"from": "2026-11-01T00:00:00Z"}
    )
    assert {r["session_id"] for r in completed} == {s["francs"].id}
    assert history_export(world.alice_client, user_id=world.bob["id"]) == []
    # Billing sees the organization's, never another organization's.
    everything = {r["session_id"] for r in history_export(world.billing)}
    assert everything == {v.id for k, v in s.items() if k != "stranger"}
    assert history_export(world.billing, organization_id=world.tenant.id) != []


def test_an_owner_exports_their_chargers_sessions_and_a_guest_their_own(
    app: Flask, api_smtp: SmtpServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = tenant.device()["id"], tenant.device()["id"]
    owner_access, owner = person(tenant, api_smtp, mine, "owner")
    guest_access, guest = person(tenant, api_smtp, mine, "guest")
    someone, _ = tenant.user()
    org = {"organization_id": tenant.id, "started_at": utc(2026, 11, 2), "energy_wh": 100.0}
    on_mine = {
        "owners": add_session(app, device_id=mine, user_id=owner_access["user_id"], **org),
        "guests": add_session(app, device_id=mine, user_id=guest_access["user_id"], **org),
        "someones": add_session(app, device_id=mine, user_id=someone["id"], **org),
        "free": add_session(app, device_id=mine, source=SessionSource.FREE, **org),
    }
    elsewhere = add_session(app, device_id=theirs, user_id=someone["id"], **org)
    stranger, _ = other_tenant.user()
    foreign = add_session(
        app,
        device_id=other_tenant.device()["id"],
        organization_id=other_tenant.id,
        user_id=stranger["id"],
        started_at=utc(2026, 11, 2),
    )

    owners = {r["session_id"] for r in history_export(owner)}
    assert owners == {record.id for record in on_mine.values()}
    assert elsewhere.id not in owners and foreign.id not in owners
    guests = {r["session_id"] for r in history_export(guest)}
    assert guests == {on_mine["guests"].id}
    assert history_export(guest, device_id=mine) == history_export(guest)
    # Neither reads the billing report.
    for client in (owner, guest):
        refused = client.get("/reports/sessions.csv")
        assert refused.status_code == 403
        assert refused.get_json()["errors"]["permission"] == ["billing:read"]


def test_the_export_names_its_permissions(client: Client) -> None:
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/sessions.csv"]["get"]
    assert operation["x-required-permission"] == "sessions:read"
    assert operation["x-alternative-permissions"] == ["billing:read", "charging:start"]
    billing = spec["paths"]["/api/v1/reports/sessions.csv"]["get"]
    assert billing["x-required-permission"] == "billing:read"
    assert "x-alternative-permissions" not in billing


def test_a_streamed_export_gives_its_connection_back(world: World, app: Flask) -> None:
    """The CSV is read after the request ended: on a session of its own, closed with the body.
    (Read on the request's session, it held a transaction open for the life of the pooled
    connection: on MariaDB a metadata lock that blocked DROP and ALTER TABLE.)"""
    pool = get_database(app).engine.pool
    for path in ("/reports/sessions.csv", "/sessions.csv"):
        response = world.billing.get(
            path, query_string={"month": "2026-11"} if "reports" in path else {}
        )
        assert response.status_code == 200 and response.get_data()
        assert pool.checkedout() == 0, path  # type: ignore[attr-defined]
