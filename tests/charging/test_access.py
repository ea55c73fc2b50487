"""A charger's owners and guests (ChargerAccess) through the ordinary API routes: they see and act
on exactly their chargers, with the rights of the ``owner`` and ``guest`` roles; who sees the
access list; removing access; and the chargers' local authorization lists follow every change
(on the embedded broker and on Mosquitto)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from cloud.mail.backends import EXTENSION as MAILER
from cloud.mail.backends import open_mailer
from firmware.core import contract
from tests.charging.test_worker import running_charging_worker
from tests.helpers import PASSWORD, Client, Tenant
from tests.link import Link
from tests.mqtt import Mqtt
from tests.services.smtp import SmtpServer, body, mail_settings

LINK = re.compile(r"https?://\S+/api/v1/invitations/(?P<id>[0-9a-f]{32})/accept\?(?P<query>\S+)")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def grant(
    inviter: Client,
    server: SmtpServer,
    device_id: str,
    level: str,
    email: str,
    password: str | None = PASSWORD,
    **window: dt.datetime,
) -> dict[str, Any]:
    """Invite ``email`` by mail and accept from the mailed link: the access made."""
    inviter.created(
        f"/devices/{device_id}/invitations",
        {"email": email, "level": level, **{k: v.isoformat() for k, v in window.items()}},
    )
    server.wait_for(lambda d: email in d.rcpt_tos)
    found = LINK.search(body(server.to(email)[-1].message))
    assert found
    (secret,) = parse_qs(found["query"])["secret"]
    extra = {"password": password, "name": email.split("@")[0]} if password else {}
    done = Client(inviter.http).post(
        f"/invitations/{found['id']}/accept", json={"secret": secret, **extra}
    )
    assert done.status_code == 200, done.get_json()
    access: dict[str, Any] = done.get_json()
    return access


def person(
    tenant: Tenant, server: SmtpServer, device_id: str, level: str, **window: dt.datetime
) -> tuple[dict[str, Any], Client]:
    """A new account that the organization's admin made owner or guest of ``device_id``."""
    email = f"{level}-{secrets.token_hex(5)}@{tenant.slug}.test"
    access = grant(tenant.admin, server, device_id, level, email, **window)
    return access, Client(tenant.admin.http).signed_in(email, PASSWORD)


def test_an_owner_sees_and_acts_on_exactly_their_chargers(
    api_smtp: SmtpServer, tenant: Tenant
) -> None:
    mine, theirs = tenant.device(), tenant.device()
    _, owner = person(tenant, api_smtp, mine["id"], "owner")

    assert [d["id"] for d in owner.get("/devices").get_json()] == [mine["id"]]
    assert owner.get(f"/devices/{theirs['id']}").status_code == 404
    assert owner.get("/fleet/status").get_json()["devices"] == 1
    # The owner role's rights on that charger: commands and the settings it may write.
    reboot = {"name": "reboot", "args": {}}
    assert owner.post(f"/devices/{mine['id']}/commands", json=reboot).status_code == 202
    assert owner.post(f"/devices/{theirs['id']}/commands", json=reboot).status_code == 404
    path = f"/devices/{mine['id']}/parameters"
    assert owner.put(f"{path}/led_brightness_pct", json={"value": 40}).status_code == 202
    refused = owner.put(f"{path}/max_current_a", json={"value": 10})  # the installer's
    assert refused.status_code == 403
    assert owner.get(path).status_code == 200
    # Not the rights it lacks: the registry record is the operator's.
    assert owner.patch(f"/devices/{mine['id']}", json={"name": "x"}).status_code == 403
    assert owner.delete(f"/devices/{mine['id']}").status_code == 403
    assert owner.get("/users").status_code == 403

    # Everybody else is as before: an operator of the organization sees both.
    _, operator = tenant.user("operator")
    seen = {d["id"] for d in operator.get("/devices").get_json()}
    assert {mine["id"], theirs["id"]} <= seen


def test_a_guest_has_the_guest_role_on_one_charger(api_smtp: SmtpServer, tenant: Tenant) -> None:
    charger, other = tenant.device(), tenant.device()
    _, guest = person(
        tenant,
        api_smtp,
        charger["id"],
        "guest",
        valid_from=now() - dt.timedelta(minutes=5),
        valid_until=now() + dt.timedelta(hours=3),
    )
    assert [d["id"] for d in guest.get("/devices").get_json()] == [charger["id"]]
    assert guest.get(f"/devices/{other['id']}").status_code == 404
    # devices:read, charging:start and charging:stop only: no commands route, no telemetry.
    command = {"name": "reboot", "args": {}}
    assert guest.post(f"/devices/{charger['id']}/commands", json=command).status_code == 403
    assert guest.get(f"/devices/{charger['id']}/status").status_code == 403


def test_who_sees_a_chargers_people(
    api_smtp: SmtpServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    charger, elsewhere = tenant.device(), tenant.device()
    owner_access, owner = person(tenant, api_smtp, charger["id"], "owner")
    guest_access, guest = person(tenant, api_smtp, charger["id"], "guest")
    _, other_owner = person(tenant, api_smtp, elsewhere["id"], "owner")
    path = f"/devices/{charger['id']}/access"

    expected = {(owner_access["user_id"], "owner"), (guest_access["user_id"], "guest")}
    for reader in (owner, tenant.user("operator")[1], tenant.user("support")[1], tenant.admin):
        listed = reader.get(path)
        assert listed.status_code == 200, listed.get_json()
        assert {(a["user_id"], a["level"]) for a in listed.get_json()} == expected
    assert {a["user_id"] for a in owner.get(path, query_string={"level": "guest"}).get_json()} == {
        guest_access["user_id"]
    }
    refused = guest.get(path)
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"permission": ["devices:read"]}
    # ...but a guest reads their own entry.
    assert guest.get(f"{path}/{guest_access['user_id']}").status_code == 200
    assert guest.get(f"{path}/{owner_access['user_id']}").status_code == 403
    assert other_owner.get(path).status_code == 404
    _, stranger = other_tenant.user("organization-admin")
    assert stranger.get(path).status_code == 404
    assert owner.get(path, query_string={"level": "boss"}).status_code == 422


def test_removing_access(api_smtp: SmtpServer, tenant: Tenant) -> None:
    charger = tenant.device()
    owner_access, owner = person(tenant, api_smtp, charger["id"], "owner")
    guest_access, guest = person(tenant, api_smtp, charger["id"], "guest")
    leaving_access, leaving = person(tenant, api_smtp, charger["id"], "guest")
    path = f"/devices/{charger['id']}/access"

    _, operator = tenant.user("operator")  # sees the list, may not manage people
    refused = operator.delete(f"{path}/{guest_access['user_id']}")
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"permission": ["users:write"]}
    assert guest.delete(f"{path}/{owner_access['user_id']}").status_code == 403
    # Like every delete here, it needs the entry's ETag.
    assert owner.request("DELETE", f"{path}/{guest_access['user_id']}").status_code == 428

    assert owner.delete(f"{path}/{guest_access['user_id']}").status_code == 204
    assert guest.get(f"/devices/{charger['id']}").status_code == 403  # no rights anywhere
    assert owner.get(f"{path}/{guest_access['user_id']}").status_code == 404
    # A guest may leave on their own.
    assert leaving.delete(f"{path}/{leaving_access['user_id']}").status_code == 204
    assert leaving.get("/devices").status_code == 403
    # The organization's admin (users:write) removes an owner.
    assert tenant.admin.delete(f"{path}/{owner_access['user_id']}").status_code == 204
    assert owner.get(f"/devices/{charger['id']}").status_code == 403
    assert tenant.admin.get(path).get_json() == []

    audit = tenant.admin.get(
        "/audit-log", query_string={"action": "charger_access.revoke", "object_id": charger["id"]}
    ).get_json()
    admin_id = tenant.admin.get("/auth/me").get_json()["id"]
    assert sorted((e["actor_id"], e["details"]["user_id"]) for e in audit) == sorted(
        [
            (f"user:{owner_access['user_id']}", guest_access["user_id"]),
            (f"user:{leaving_access['user_id']}", leaving_access["user_id"]),
            (f"user:{admin_id}", owner_access["user_id"]),
        ]
    )


# --- the chargers follow: local authorization lists on real brokers --------------------------


@pytest.fixture
def link_api(link: Link, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Link]:
    """``link``'s API mails through the SMTP server; the charging worker publishes the lists
    on ``link``'s broker."""
    previous = link.app.extensions[MAILER]
    link.app.extensions[MAILER] = open_mailer(mail_settings(smtp_server))
    try:
        with running_charging_worker(link, tmp_path):
            yield link
    finally:
        link.app.extensions[MAILER] = previous


def next_list(charger: Mqtt, device_id: str, newer_than: int = -1) -> contract.AuthList:
    """The next list on the charger's topic with a version above ``newer_than`` (20 s at most
    per message: ``expect`` raises when none comes)."""
    topic = contract.topic(device_id, contract.AUTH_LIST)
    while True:
        message = charger.expect(timeout=20)
        if message.topic == topic and message.payload:
            listed = contract.decode_auth_list(message.payload)
            if listed.version > newer_than:
                return listed


def test_the_local_list_follows_access_changes(link_api: Link, smtp_server: SmtpServer) -> None:
    link = link_api
    device_id, password = link.device()
    user, _ = link.tenant.user()  # an account with no role: no right to charge anywhere
    link.admin.created(
        "/cards", {"uid": "04c0ffee", "user_id": user["id"], "organization_id": link.tenant.id}
    )
    with link.mqtt(device_id, password).connected() as charger:
        assert not charger.subscribe(contract.topic(device_id, contract.AUTH_LIST)).is_failure
        listed = next_list(charger, device_id)
        assert listed.tokens == {}

        # Accepting a guest invitation puts the card on the list, valid until the window ends.
        until = (now() + dt.timedelta(days=2)).replace(microsecond=0)
        access = grant(
            link.admin,
            smtp_server,
            device_id,
            "guest",
            user["email"],
            password=None,
            valid_from=now() - dt.timedelta(hours=1),
            valid_until=until,
        )
        assert access["user_id"] == user["id"]
        listed = next_list(charger, device_id, listed.version)
        assert listed.tokens == {"04C0FFEE": int(until.timestamp() * 1000)}

        # Removing the access takes it off again.
        path = f"/devices/{device_id}/access/{user['id']}"
        assert link.admin.delete(path).status_code == 204
        assert next_list(charger, device_id, listed.version).tokens == {}
