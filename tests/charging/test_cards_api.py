"""The /cards API: registering, changing and deleting RFID cards, who may do it and see them,
and the authorization lists that follow every change (on SQLite and MariaDB)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask

from cloud.access import outbox
from cloud.db import get_database
from firmware.core import contract
from tests.charging.test_authorization import Recorder
from tests.helpers import Client, Tenant


class Worker(Recorder):
    """The charging worker's list publishing, run whenever the test looks: what it sends for
    the requests the API recorded (the broker and the worker's loop are tested elsewhere)."""

    def __init__(self, app: Flask) -> None:
        super().__init__()
        self.app = app

    def drain(self) -> None:
        with get_database(self.app).transaction() as session:
            outbox.publish_requested(session, self)

    def lists_of(self, device_id: str) -> list[contract.AuthList]:
        self.drain()
        return super().lists_of(device_id)

    def count(self) -> int:
        self.drain()
        return len(self.sent)


@pytest.fixture
def recorder(app: Flask) -> Worker:
    """What the charging worker publishes after the API's changes."""
    return Worker(app)


def hex_uid() -> str:
    return secrets.token_hex(4)


def register(client: Client, tenant: Tenant, user_id: int, **fields: Any) -> Any:
    body = {"uid": hex_uid(), "user_id": user_id, "organization_id": tenant.id, **fields}
    return client.post("/cards", json=body)


def named(response: Any, field: str, location: str = "json") -> bool:
    return field in response.get_json().get("errors", {}).get(location, {})


def test_registering_normalises_hex_uids_and_refuses_duplicates_naming_uid(
    admin: Client, tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    user, _ = tenant.user()
    created = register(admin, tenant, user["id"], uid="04a1b2c3", label="blue fob")
    assert created.status_code == 201, created.get_json()
    card = created.get_json()
    assert card["uid"] == "04A1B2C3" and card["enabled"] is True and card["label"] == "blue fob"
    assert card["organization_id"] == tenant.id and card["user_id"] == user["id"]
    assert set(card["_links"]) >= {"self", "user", "organization", "sessions", "audit"}
    # Other idTokens are kept as the charger sends them (an eMAID, case and dashes included).
    emaid = register(admin, tenant, user["id"], uid="DE-8AA-1a2b3C4d5-6")
    assert emaid.status_code == 201 and emaid.get_json()["uid"] == "DE-8AA-1a2b3C4d5-6"

    again = register(admin, tenant, user["id"], uid="04A1B2C3")
    assert again.status_code == 409 and named(again, "uid")
    # A uid names a card within one organization: another may register the same uid.
    stranger, _ = other_tenant.user()
    elsewhere = register(admin, other_tenant, stranger["id"], uid="04a1b2c3")
    assert elsewhere.status_code == 201, elsewhere.get_json()


@pytest.mark.parametrize(
    "uid",
    ["", "x" * 65, "has space", "=HYPERLINK()", "-04A1", "caf\u00e9", "tab\there"],
)
def test_malformed_uids_are_refused_naming_uid(
    admin: Client, tenant: Tenant, recorder: Worker, uid: str
) -> None:
    user, _ = tenant.user()
    response = register(admin, tenant, user["id"], uid=uid)
    assert response.status_code == 422 and named(response, "uid"), response.get_json()


def test_the_holder_must_be_a_user_of_the_cards_organization(
    admin: Client, tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    stranger, _ = other_tenant.user()
    response = register(admin, tenant, stranger["id"])
    assert response.status_code == 422 and named(response, "user_id")
    user, _ = tenant.user()
    card = register(admin, tenant, user["id"]).get_json()
    moved = admin.patch(f"/cards/{card['id']}", json={"user_id": stranger["id"]})
    assert moved.status_code == 422 and named(moved, "user_id")


def test_changes_need_the_current_etag(admin: Client, tenant: Tenant, recorder: Worker) -> None:
    user, _ = tenant.user()
    card = register(admin, tenant, user["id"]).get_json()
    path = f"/cards/{card['id']}"
    assert admin.request("PATCH", path, json={"enabled": False}).status_code == 428
    stale = admin.request("PATCH", path, json={"enabled": False}, headers={"If-Match": '"x"'})
    assert stale.status_code == 412
    done = admin.patch(path, json={"enabled": False, "label": "lost"})
    assert done.status_code == 200
    assert done.get_json()["enabled"] is False and done.get_json()["label"] == "lost"
    assert admin.request("DELETE", path).status_code == 428
    assert admin.delete(path).status_code == 204
    assert admin.get(path).status_code == 404
    actions = [
        e["action"]
        for e in admin.get(
            "/audit-log", query_string={"object_type": "card", "object_id": card["id"]}
        ).get_json()
    ]
    assert actions == ["card.delete", "card.update", "card.create"]


def test_lists_filter_and_paginate(admin: Client, tenant: Tenant, recorder: Worker) -> None:
    alice, _ = tenant.user()
    bob, _ = tenant.user()
    mine = [register(admin, tenant, alice["id"]).get_json() for _ in range(3)]
    register(admin, tenant, bob["id"])
    off = admin.patch(f"/cards/{mine[0]['id']}", json={"enabled": False}).get_json()

    def ids(**query: Any) -> list[int]:
        response = admin.get("/cards", query_string={"organization_id": tenant.id, **query})
        assert response.status_code == 200, response.get_json()
        return [c["id"] for c in response.get_json()]

    assert ids(user_id=alice["id"]) == [c["id"] for c in mine]
    assert ids(user_id=alice["id"], enabled="false") == [off["id"]]
    assert ids(uid=mine[1]["uid"].lower()) == [mine[1]["id"]]  # hex matches in any case
    assert len(ids()) == 4
    page = admin.get(
        "/cards", query_string={"organization_id": tenant.id, "page_size": 2, "page": 2}
    )
    assert len(page.get_json()) == 2 and 'rel="prev"' in page.headers["Link"]
    bad = admin.get("/cards", query_string={"enabled": "maybe"})
    assert bad.status_code == 422 and named(bad, "enabled", "query")


def test_who_may_read_and_write_cards(
    admin: Client, tenant: Tenant, other_tenant: Tenant, recorder: Worker
) -> None:
    site = admin.created("/sites", {"name": "s-" + hex_uid(), "organization_id": tenant.id})
    operator_user, operator = tenant.user("operator")
    owner_user, owner = tenant.user("owner")
    narrowed_user, narrowed = tenant.user("owner", site_id=site["id"])
    _, guest = tenant.user("guest")
    _, foreign_admin = other_tenant.user("organization-admin")

    made = operator.post(
        "/cards", json={"uid": hex_uid(), "user_id": narrowed_user["id"], "label": "site"}
    )
    assert made.status_code == 201, made.get_json()  # the operator's own organization
    theirs = made.get_json()
    other = register(operator, tenant, owner_user["id"]).get_json()

    # An owner (org-wide) reads every card of the organization but registers none.
    assert {c["id"] for c in owner.get("/cards").get_json()} == {theirs["id"], other["id"]}
    refused = register(owner, tenant, owner_user["id"])
    assert refused.status_code == 403
    assert refused.get_json()["errors"]["permission"] == ["cards:write"]
    # A role narrowed to a site shows one's own cards only, and may not change them.
    assert [c["id"] for c in narrowed.get("/cards").get_json()] == [theirs["id"]]
    assert narrowed.get(f"/cards/{theirs['id']}").status_code == 200
    assert narrowed.get(f"/cards/{other['id']}").status_code == 404
    assert narrowed.patch(f"/cards/{theirs['id']}", json={"label": "x"}).status_code == 403
    # A guest holds no card right; another organization does not see ours at all.
    assert guest.get("/cards").status_code == 403
    assert foreign_admin.get(f"/cards/{theirs['id']}").status_code == 404
    assert (
        foreign_admin.delete(f"/cards/{theirs['id']}", headers={"If-Match": "*"}).status_code == 404
    )
    assert theirs["id"] not in [c["id"] for c in foreign_admin.get("/cards").get_json()]
    assert register(foreign_admin, tenant, narrowed_user["id"]).status_code == 422
    assert operator_user["id"]  # the operator needs no card to manage them


def test_every_change_that_alters_a_list_is_published(
    admin: Client, tenant: Tenant, recorder: Worker
) -> None:
    operator, _ = tenant.user("operator")
    first, second = tenant.device()["id"], tenant.device()["id"]
    card = register(admin, tenant, operator["id"], uid="a0b1c2d3").get_json()
    for device_id in (first, second):
        assert recorder.lists_of(device_id)[-1].tokens == {"A0B1C2D3": None}

    sent = recorder.count()
    assert admin.patch(f"/cards/{card['id']}", json={"label": "renamed"}).status_code == 200
    assert recorder.count() == sent  # a label is on no list

    assert admin.patch(f"/cards/{card['id']}", json={"enabled": False}).status_code == 200
    disabled = recorder.lists_of(first)[-1]
    assert disabled.tokens == {}
    assert admin.patch(f"/cards/{card['id']}", json={"enabled": True}).status_code == 200
    enabled = recorder.lists_of(first)[-1]
    assert enabled.tokens == {"A0B1C2D3": None} and enabled.version == disabled.version + 1

    nobody, _ = tenant.user()  # may charge nowhere: the card leaves the lists with its move
    assert admin.patch(f"/cards/{card['id']}", json={"user_id": nobody["id"]}).status_code == 200
    assert recorder.lists_of(second)[-1].tokens == {}
    assert admin.patch(f"/cards/{card['id']}", json={"user_id": operator["id"]}).status_code == 200
    assert recorder.lists_of(second)[-1].tokens == {"A0B1C2D3": None}
    assert admin.delete(f"/cards/{card['id']}").status_code == 204
    assert recorder.lists_of(first)[-1].tokens == recorder.lists_of(second)[-1].tokens == {}


def test_a_broker_that_is_down_does_not_fail_the_change(
    admin: Client, tenant: Tenant, recorder: Worker
) -> None:
    operator, _ = tenant.user("operator")
    device_id = tenant.device()["id"]
    recorder.answer = False
    created = register(admin, tenant, operator["id"])
    assert created.status_code == 201
    assert recorder.lists_of(device_id) == []
    recorder.answer = True
    # The next change publishes the current list, the unsent card included.
    register(admin, tenant, operator["id"], uid="0badcafe")
    assert recorder.lists_of(device_id)[-1].tokens == {
        created.get_json()["uid"]: None,
        "0BADCAFE": None,
    }
