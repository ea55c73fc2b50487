"""Who may charge where, and the local authorization lists the chargers get (contract 4.9).

The decision and the lists run on the real records backends (SQLite and MariaDB); the lists
reach a charger's own subscription on both brokers (embedded amqtt and Mosquitto) through the
``link`` fixture, retained, and another device cannot subscribe to them.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloud.access import outbox
from cloud.access.authlists import (
    authorization_tokens,
    may_charge,
    refresh_authorization_lists,
    sweep,
)
from cloud.access.models import AuthorizationList, RfidCard
from cloud.db import get_database
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from firmware.core import contract
from tests.charging.test_worker import running_charging_worker, wait_for
from tests.helpers import Client, Tenant
from tests.link import Link
from tests.mqtt import Mqtt

NOW = dt.datetime(2026, 11, 15, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


class Recorder:
    """The broker's side of ``AuthListPublisher`` as a list of what was sent; ``answer`` False
    plays a broker that cannot be reached. ``before_ack`` runs inside a send (a concurrent
    refresh overtaking this one)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, contract.AuthList]] = []
        self.answer = True
        self.before_ack: Any = None

    def send_all(self, lists: Sequence[tuple[str, bytes]]) -> set[str]:
        if self.before_ack is not None:
            hook, self.before_ack = self.before_ack, None
            hook()
        if not self.answer:
            return set()
        for device_id, payload in lists:
            self.sent.append((device_id, contract.decode_auth_list(payload)))
        return {device_id for device_id, _ in lists}

    def lists_of(self, device_id: str) -> list[contract.AuthList]:
        return [listed for sent_to, listed in self.sent if sent_to == device_id]


def session_of(app: Flask) -> Session:
    """A session of the app's database (the caller closes it)."""
    return get_database(app).session()


def add_card(app: Flask, organization_id: int, user_id: int, uid: str, enabled: bool = True) -> int:
    with get_database(app).transaction() as session:
        card = RfidCard(organization_id=organization_id, uid=uid, user_id=user_id, enabled=enabled)
        session.add(card)
        session.flush()
        return card.id


def grant(
    app: Flask,
    device_id: str,
    user_id: int,
    level: AccessLevel,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> None:
    with get_database(app).transaction() as session:
        session.add(
            ChargerAccess(
                device_id=device_id,
                user_id=user_id,
                level=level,
                valid_from=valid_from,
                valid_until=valid_until,
            )
        )


def may(app: Flask, user_id: int, device_id: str, at: dt.datetime = NOW) -> bool:
    with session_of(app) as session:
        device = session.get(Device, device_id)
        assert device is not None
        return may_charge(session, user_id, device, at)


def tokens(app: Flask, device_id: str, at: dt.datetime = NOW) -> dict[str, int | None]:
    with session_of(app) as session:
        device = session.get(Device, device_id)
        assert device is not None
        return authorization_tokens(session, device, at)


def list_row(app: Flask, device_id: str) -> AuthorizationList | None:
    with session_of(app) as session:
        return session.get(AuthorizationList, device_id)


def uid() -> str:
    return secrets.token_hex(4).upper()


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
def fleet(app: Flask, admin: Client, tenant: Tenant) -> dict[str, Any]:
    """Two sites, a group, a charger on each site, one in the group and one of each kind of
    user: org-wide roles, roles narrowed to a site and to the group, and no role at all."""
    site_a = admin.created("/sites", {"name": "a-" + uid(), "organization_id": tenant.id})
    site_b = admin.created("/sites", {"name": "b-" + uid(), "organization_id": tenant.id})
    group = admin.created("/device-groups", {"name": "g-" + uid(), "organization_id": tenant.id})
    on_a = tenant.device(site_id=site_a["id"])["id"]
    on_b = tenant.device(site_id=site_b["id"])["id"]
    grouped = tenant.device()["id"]
    assert admin.put(f"/device-groups/{group['id']}/devices/{grouped}").status_code == 204
    users = {
        "operator": tenant.user("operator")[0],
        "installer": tenant.user("installer")[0],  # configures chargers, never charges
        "support": tenant.user("support")[0],
        "owner_of_a": tenant.user("owner", site_id=site_a["id"])[0],
        "owner_of_group": tenant.user("owner", device_group_id=group["id"])[0],
        "nobody": tenant.user()[0],
    }
    return {"devices": {"a": on_a, "b": on_b, "group": grouped}, "users": users}


def test_roles_grant_charging_where_they_hold_charging_start(
    app: Flask, fleet: dict[str, Any]
) -> None:
    users = {name: user["id"] for name, user in fleet["users"].items()}
    devices = fleet["devices"]
    expected = {
        "operator": {"a", "b", "group"},
        "installer": set(),
        "support": set(),
        "owner_of_a": {"a"},
        "owner_of_group": {"group"},
        "nobody": set(),
    }
    for name, allowed in expected.items():
        got = {key for key, device_id in devices.items() if may(app, users[name], device_id)}
        assert got == allowed, name


def test_owners_always_and_guests_inside_their_window(
    app: Flask, fleet: dict[str, Any], tenant: Tenant
) -> None:
    owner, _ = tenant.user()
    guest, _ = tenant.user()
    device = fleet["devices"]["b"]
    grant(app, device, owner["id"], AccessLevel.OWNER)
    grant(app, device, guest["id"], AccessLevel.GUEST, NOW + HOUR, NOW + 3 * HOUR)
    for at in (NOW - 100 * HOUR, NOW, NOW + 100 * HOUR):
        assert may(app, owner["id"], device, at)
    assert not may(app, guest["id"], device, NOW)  # before the window
    assert may(app, guest["id"], device, NOW + HOUR)  # its first instant
    assert may(app, guest["id"], device, NOW + 2 * HOUR)
    assert not may(app, guest["id"], device, NOW + 3 * HOUR)  # the end is exclusive
    assert not may(app, guest["id"], device, NOW + 4 * HOUR)
    # The access is to that one charger only.
    assert not may(app, owner["id"], fleet["devices"]["a"])
    assert not may(app, guest["id"], fleet["devices"]["a"], NOW + 2 * HOUR)


def test_an_inactive_user_may_not_charge_and_leaves_the_lists(
    app: Flask, admin: Client, fleet: dict[str, Any], tenant: Tenant
) -> None:
    operator = fleet["users"]["operator"]
    owner, _ = tenant.user()
    device = fleet["devices"]["a"]
    grant(app, device, owner["id"], AccessLevel.OWNER)
    operator_card, owner_card = uid(), uid()
    add_card(app, tenant.id, operator["id"], operator_card)
    add_card(app, tenant.id, owner["id"], owner_card)
    assert tokens(app, device) == {operator_card: None, owner_card: None}
    for user in (operator, owner):
        response = admin.patch(f"/users/{user['id']}", json={"is_active": False})
        assert response.status_code == 200, response.get_json()
        assert not may(app, user["id"], device)
    assert tokens(app, device) == {}


def test_the_list_holds_the_enabled_cards_of_whoever_may_charge_now_or_later(
    app: Flask, fleet: dict[str, Any], tenant: Tenant, other_tenant: Tenant
) -> None:
    users = fleet["users"]
    on_a, on_b = fleet["devices"]["a"], fleet["devices"]["b"]
    cards = {name: uid() for name in ("operator", "owner_of_a", "installer", "nobody")}
    for name, card in cards.items():
        add_card(app, tenant.id, users[name]["id"], card)
    spare, disabled = uid(), uid()
    add_card(app, tenant.id, users["operator"]["id"], spare)  # a user may hold several cards
    add_card(app, tenant.id, users["operator"]["id"], disabled, enabled=False)
    soon, now, was = tenant.user()[0], tenant.user()[0], tenant.user()[0]
    soon_card, now_card, was_card = uid(), uid(), uid()
    for user, card in ((soon, soon_card), (now, now_card), (was, was_card)):
        add_card(app, tenant.id, user["id"], card)
    grant(app, on_a, soon["id"], AccessLevel.GUEST, NOW + HOUR, NOW + 2 * HOUR)
    grant(app, on_a, now["id"], AccessLevel.GUEST, NOW - HOUR, None)
    grant(app, on_a, was["id"], AccessLevel.GUEST, NOW - 2 * HOUR, NOW - HOUR)
    # Another organization's card with the same uid as ours names another card there.
    stranger, _ = other_tenant.user("organization-admin")
    add_card(app, other_tenant.id, stranger["id"], cards["nobody"])

    assert tokens(app, on_a) == {
        cards["operator"]: None,
        spare: None,
        cards["owner_of_a"]: None,
        soon_card: ms(NOW + 2 * HOUR),  # listed ahead of its window, ending with it
        now_card: None,
    }
    assert tokens(app, on_b) == {cards["operator"]: None, spare: None}
    # Once the window has passed the guest's card is off the list.
    assert soon_card not in tokens(app, on_a, NOW + 2 * HOUR)


def test_a_version_is_recorded_only_when_the_list_changes_and_sent_after_commit(
    app: Flask, fleet: dict[str, Any], tenant: Tenant
) -> None:
    device = fleet["devices"]["a"]
    operator = fleet["users"]["operator"]
    recorder = Recorder()
    with session_of(app) as session:
        assert device in refresh_authorization_lists(session, [device], recorder, at=NOW)
        [first] = recorder.lists_of(device)
        assert first.tokens == {} and first.version == list_row(app, device).version  # type: ignore[union-attr]

        # Nothing changed: nothing recorded, nothing sent.
        assert refresh_authorization_lists(session, [device], recorder, at=NOW) == []
        assert len(recorder.lists_of(device)) == 1

        card = uid()
        card_id = add_card(app, tenant.id, operator["id"], card)
        assert refresh_authorization_lists(session, [device], recorder, at=NOW) == [device]
        second = recorder.lists_of(device)[-1]
        assert second.version == first.version + 1 and second.tokens == {card: None}

        # The broker is down: the new version is recorded but stays unpublished ...
        recorder.answer = False
        with get_database(app).transaction() as other:
            other.execute(update(RfidCard).where(RfidCard.id == card_id).values(enabled=False))
        assert refresh_authorization_lists(session, [device], recorder, at=NOW) == []
        row = list_row(app, device)
        assert row is not None and row.version == second.version + 1 and row.published_at is None

        # ... until a sweep sends the same version (no new one) once it is back.
        recorder.answer = True
        assert device in sweep(session, recorder, at=NOW)
        third = recorder.lists_of(device)[-1]
        assert third.version == second.version + 1 and third.tokens == {}
        row = list_row(app, device)
        assert row is not None and row.version == third.version and row.published_at is not None


def test_a_refresh_overtaken_by_another_sends_the_newer_list_last(
    app: Flask, fleet: dict[str, Any], tenant: Tenant
) -> None:
    """Two refreshes at once: the one whose older list reached the broker last sends the newer
    one again, so that the retained list is the version the database holds."""
    device = fleet["devices"]["b"]
    operator = fleet["users"]["operator"]
    slow, fast = Recorder(), Recorder()
    with session_of(app) as session:
        refresh_authorization_lists(session, [device], slow, at=NOW)
    first, second = uid(), uid()
    add_card(app, tenant.id, operator["id"], first)

    def overtake() -> None:
        add_card(app, tenant.id, operator["id"], second)
        with session_of(app) as other:
            assert refresh_authorization_lists(other, [device], fast, at=NOW) == [device]

    slow.before_ack = overtake  # while the list with ``first`` alone is on its way
    with session_of(app) as session:
        assert refresh_authorization_lists(session, [device], slow, at=NOW) == [device]
    row = list_row(app, device)
    assert row is not None
    both = {first: None, second: None}
    [newer] = fast.lists_of(device)
    assert newer.version == row.version and newer.tokens == both
    overtaken, last = slow.lists_of(device)[-2:]
    assert overtaken.version == row.version - 1 and overtaken.tokens == {first: None}
    assert last.version == row.version and last.tokens == both  # the last word on the broker


def refused_count() -> float:
    value = REGISTRY.get_sample_value("ampfleet_auth_lists_refused_total", {"reason": "too_large"})
    return value or 0.0


def test_a_list_over_the_contract_limit_is_refused_and_counted(
    app: Flask, fleet: dict[str, Any], tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    device = fleet["devices"]["group"]
    operator = fleet["users"]["operator"]
    recorder = Recorder()
    with session_of(app) as session:
        refresh_authorization_lists(session, [device], recorder, at=NOW)
    before = list_row(app, device)
    assert before is not None
    with get_database(app).transaction() as session:
        session.add_all(
            RfidCard(organization_id=tenant.id, uid=f"{n:08X}", user_id=operator["id"])
            for n in range(contract.MAX_AUTH_TOKENS + 1)
        )
    counted = refused_count()
    with session_of(app) as session:
        assert refresh_authorization_lists(session, [device], recorder, at=NOW) == []
    assert refused_count() == counted + 1
    [logged] = [r for r in caplog.records if r.levelname == "ERROR" and device in r.getMessage()]
    assert f"{contract.MAX_AUTH_TOKENS + 1} cards" in logged.getMessage()
    after = list_row(app, device)
    assert after is not None and (after.version, after.digest) == (before.version, before.digest)
    assert len(recorder.lists_of(device)) == 1  # the charger keeps the list it has

    with get_database(app).transaction() as session:
        session.execute(
            delete(RfidCard).where(
                RfidCard.organization_id == tenant.id, RfidCard.uid == "00000000"
            )
        )
    with session_of(app) as session:
        assert refresh_authorization_lists(session, [device], recorder, at=NOW) == [device]
    assert len(recorder.lists_of(device)[-1].tokens) == contract.MAX_AUTH_TOKENS


def test_a_request_for_a_user_takes_a_lost_right_off_the_charger(
    app: Flask, fleet: dict[str, Any], tenant: Tenant
) -> None:
    guest, _ = tenant.user()
    device = fleet["devices"]["a"]
    card = uid()
    add_card(app, tenant.id, guest["id"], card)
    grant(app, device, guest["id"], AccessLevel.GUEST)
    recorder = Recorder()
    with session_of(app) as session:
        outbox.request_for_user(session, guest["id"])
        assert device in outbox.publish_requested(session, recorder, at=NOW)
    assert recorder.lists_of(device)[-1].tokens == {card: None}
    with get_database(app).transaction() as session:
        session.execute(delete(ChargerAccess).where(ChargerAccess.user_id == guest["id"]))
    with session_of(app) as session:
        # The guest may use no charger now: their organization's lists are recomputed anyway.
        outbox.request_for_user(session, guest["id"])
        assert outbox.publish_requested(session, recorder, at=NOW) == [device]
    assert recorder.lists_of(device)[-1].tokens == {}


# --- on the brokers -------------------------------------------------------------------------


@pytest.fixture
def publisher(link: Link, tmp_path: Path) -> Iterator[None]:
    """The charging worker publishes the lists the API asks for, on ``link``'s broker."""
    with running_charging_worker(link, tmp_path):
        yield


def published_row(app: Flask, device_id: str) -> AuthorizationList | None:
    """The list record of ``device_id`` once marked published."""
    with session_of(app) as session:
        row = session.get(AuthorizationList, device_id)
        return row if row is not None and row.published_at is not None else None


def next_list(charger: Mqtt, device_id: str, newer_than: int = -1) -> contract.AuthList:
    """The next list on the charger's own topic with a version above ``newer_than``."""
    topic = contract.topic(device_id, contract.AUTH_LIST)
    while True:
        message = charger.expect(timeout=20)
        if message.topic == topic and message.payload:
            listed = contract.decode_auth_list(message.payload)
            if listed.version > newer_than:
                return listed


def test_the_retained_list_reaches_the_charger_and_no_other_device(
    link: Link, publisher: None
) -> None:
    device_id, password = link.device()
    other_id, other_password = link.device()
    user, _ = link.tenant.user("operator")
    card = link.admin.created(
        "/cards", {"uid": "04a1b2c3", "user_id": user["id"], "organization_id": link.tenant.id}
    )
    with link.mqtt(device_id, password).connected() as charger:
        # Another device's list is not this device's to read (contract 5).
        assert charger.subscribe(contract.topic(other_id, contract.AUTH_LIST)).is_failure
        # Its own is, and the broker hands the retained list on subscribing.
        granted = charger.subscribe(contract.topic(device_id, contract.AUTH_LIST))
        assert not granted.is_failure
        listed = next_list(charger, device_id)
        assert listed.tokens == {"04A1B2C3": None}
        # The worker marks it published once the broker acknowledged it (the charger may
        # have it a moment before).
        row = wait_for(lambda: published_row(link.app, device_id), "the list marked published")
        assert row.version == listed.version

        # A change while it is connected arrives as a new version.
        disabled = link.admin.patch(f"/cards/{card['id']}", json={"enabled": False})
        assert disabled.status_code == 200, disabled.get_json()
        assert next_list(charger, device_id, listed.version).tokens == {}
    with link.mqtt(other_id, other_password).connected() as other:
        assert not other.subscribe(contract.topic(other_id, contract.AUTH_LIST)).is_failure
        assert next_list(other, other_id).tokens == {}
    with session_of(link.app) as session:
        versions = session.scalars(
            select(AuthorizationList.version).where(
                AuthorizationList.device_id.in_([device_id, other_id])
            )
        )
        assert all(v >= 2 for v in versions)
