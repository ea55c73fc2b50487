"""Invitations by e-mail, through a real SMTP server: an owner invites a guest, the mail arrives
with the link, the guest accepts and uses exactly that charger inside the window; expired,
revoked, reused and wrong secrets answer clearly; co-owners; who may invite."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import update

from cloud.access.models import Invitation
from cloud.db import get_database
from cloud.identity.grants import ChargerAccess
from cloud.mail.backends import EXTENSION as MAILER
from cloud.mail.smtp import SmtpMailer
from tests.helpers import PASSWORD, Client, Tenant
from tests.services.amqtt_broker import free_port
from tests.services.smtp import SmtpServer, body

LINK = re.compile(r"(?P<url>https?://\S+/api/v1/invitations/(?P<id>[0-9a-f]{32})/accept\?\S+)")


def iso(moment: dt.datetime) -> str:
    """An API date-time."""
    return moment.isoformat()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_email(tenant: Tenant) -> str:
    """An address nobody has used."""
    return f"invitee-{secrets.token_hex(5)}@{tenant.slug}.test"


def invite(
    inviter: Client, device_id: str, email: str, level: str, **window: Any
) -> dict[str, Any]:
    """POST an invitation (asserting 201)."""
    return inviter.created(
        f"/devices/{device_id}/invitations",
        {"email": email, "level": level, **{k: iso(v) for k, v in window.items()}},
    )


def mailed_link(server: SmtpServer, email: str) -> tuple[str, str, str]:
    """(invitation id, secret, link) of the latest invitation mailed to ``email``."""
    server.wait_for(lambda d: email in d.rcpt_tos)
    delivered = server.to(email)[-1]
    found = LINK.search(body(delivered.message))
    assert found, body(delivered.message)
    url = found["url"]
    (secret,) = parse_qs(urlsplit(url).query)["secret"]
    return found["id"], secret, url


def opened(client: Client, url: str) -> Any:
    """GET the mailed link, without any token (the test client is the API's host)."""
    parts = urlsplit(url)
    return Client(client.http).get(f"{parts.path}?{parts.query}")


def accept(client: Client, invitation_id: str, **body_: Any) -> Any:
    """POST to the public accept route, without any token."""
    return Client(client.http).post(f"/invitations/{invitation_id}/accept", json=body_)


def anonymous(client: Client) -> Client:
    return Client(client.http)


def new_guest(
    client: Client,
    server: SmtpServer,
    inviter: Client,
    device_id: str,
    tenant: Tenant,
    **window: Any,
) -> tuple[dict[str, Any], Client, str]:
    """Invite a new address as a guest, accept with a new account: (access, client, email)."""
    email = new_email(tenant)
    invitation = invite(inviter, device_id, email, "guest", **window)
    invitation_id, secret, _ = mailed_link(server, email)
    assert invitation_id == invitation["id"]
    done = accept(anonymous(client), invitation_id, secret=secret, name="Guest", password=PASSWORD)
    assert done.status_code == 200, done.get_json()
    return done.get_json(), anonymous(client).signed_in(email, PASSWORD), email


def new_owner(
    client: Client, server: SmtpServer, tenant: Tenant, device_id: str
) -> tuple[dict[str, Any], Client]:
    """The organization's admin invites a new address as owner; it accepts: (access, client)."""
    email = new_email(tenant)
    invite(tenant.admin, device_id, email, "owner")
    invitation_id, secret, _ = mailed_link(server, email)
    done = accept(anonymous(client), invitation_id, secret=secret, name="Owner", password=PASSWORD)
    assert done.status_code == 200, done.get_json()
    return done.get_json(), anonymous(client).signed_in(email, PASSWORD)


def shift(app: Flask, model: Any, where: Any, **values: Any) -> None:
    """Change a record in the database (the clock moved on, as far as it is concerned)."""
    with get_database(app).transaction() as session:
        session.execute(update(model).where(where).values(**values))


def test_an_owner_invites_a_guest_by_mail_who_then_uses_that_charger_only(
    app: Flask, client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger, other = tenant.device(name="Garage"), tenant.device()
    owner_access, owner = new_owner(client, api_smtp, tenant, charger["id"])
    assert owner_access["level"] == "owner" and owner_access["active"] is True

    email = new_email(tenant)
    start, end = now() - dt.timedelta(hours=1), now() + dt.timedelta(days=1)
    invitation = invite(owner, charger["id"], email, "guest", valid_from=start, valid_until=end)
    assert invitation["state"] == "pending" and "secret" not in invitation
    assert invitation["invited_by"] == owner_access["user_id"]

    delivered = api_smtp.wait_for(lambda d: email in d.rcpt_tos)
    assert delivered.tls and delivered.message["Subject"] == "You are invited to charge at Garage"
    invitation_id, secret, url = mailed_link(api_smtp, email)
    settings = app.extensions["ampfleet.settings"]
    assert url.startswith(f"{settings.public_url}/api/v1/invitations/{invitation['id']}/accept?")

    # The link opens a preview: public, the secret is the credential.
    preview = opened(client, url)
    assert preview.status_code == 200, preview.get_json()
    assert preview.get_json() | {"valid_from": None, "valid_until": None} == {
        "id": invitation_id,
        "device_id": charger["id"],
        "device_name": "Garage",
        "email": email,
        "level": "guest",
        "valid_from": None,
        "valid_until": None,
        "expires_at": invitation["expires_at"],
        "account_exists": False,
    }

    # No account yet: a password is needed, and the account is made in the charger's
    # organization with no role at all.
    refused = accept(anonymous(client), invitation_id, secret=secret)
    assert refused.status_code == 422
    assert "password" in refused.get_json()["errors"]["json"]
    done = accept(anonymous(client), invitation_id, secret=secret, name="Gina", password=PASSWORD)
    assert done.status_code == 200, done.get_json()
    access = done.get_json()
    assert access["level"] == "guest" and access["active"] is True and access["name"] == "Gina"
    assert access["email"] == email and access["granted_by"] == owner_access["user_id"]
    user = tenant.admin.get(f"/users/{access['user_id']}").get_json()
    assert user["organization_id"] == tenant.id and user["assignments"] == []

    guest = anonymous(client).signed_in(email, PASSWORD)
    assert [d["id"] for d in guest.get("/devices").get_json()] == [charger["id"]]
    assert guest.get(f"/devices/{charger['id']}").status_code == 200
    assert guest.get(f"/devices/{other['id']}").status_code == 404
    # A guest starts and stops sessions; it does not administer the charger or see its people.
    assert guest.patch(f"/devices/{charger['id']}", json={"name": "x"}).status_code == 403
    assert guest.get(f"/devices/{charger['id']}/access").status_code == 403
    assert guest.post(f"/devices/{charger['id']}/invitations", json={}).status_code in (403, 422)
    refused = guest.post(
        f"/devices/{charger['id']}/invitations", json={"email": new_email(tenant), "level": "guest"}
    )
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"permission": ["users:write"]}

    # The owner sees who may use the charger.
    listed = owner.get(f"/devices/{charger['id']}/access").get_json()
    assert {(a["email"], a["level"]) for a in listed} == {
        (owner_access["email"], "owner"),
        (email, "guest"),
    }
    states = owner.get(f"/devices/{charger['id']}/invitations").get_json()
    assert [i["state"] for i in states] == ["accepted", "accepted"]

    audit = tenant.admin.get(
        "/audit-log", query_string={"organization_id": tenant.id, "object_id": invitation_id}
    ).get_json()
    assert {e["action"] for e in audit} == {"invitation.create", "invitation.accept"}
    grants = tenant.admin.get(
        "/audit-log",
        query_string={"action": "charger_access.grant", "object_id": charger["id"]},
    ).get_json()
    assert {e["actor_id"] for e in grants} == {
        f"user:{owner_access['user_id']}",
        f"user:{access['user_id']}",
    }


def test_a_guest_is_refused_before_and_after_the_window(
    app: Flask, client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger = tenant.device()
    start, end = now() + dt.timedelta(hours=1), now() + dt.timedelta(hours=2)
    access, guest, _ = new_guest(
        client, api_smtp, tenant.admin, charger["id"], tenant, valid_from=start, valid_until=end
    )
    assert access["active"] is False
    # Before the window the guest holds nothing anywhere: refused like anyone without rights.
    assert guest.get("/devices").status_code == 403
    assert guest.get(f"/devices/{charger['id']}").status_code == 403

    # Inside the window (the clock moved on, as far as the record is concerned).
    row = (ChargerAccess.device_id == charger["id"]) & (ChargerAccess.user_id == access["user_id"])
    shift(app, ChargerAccess, row, valid_from=now() - dt.timedelta(hours=1))
    assert guest.get(f"/devices/{charger['id']}").status_code == 200

    # After it.
    shift(app, ChargerAccess, row, valid_until=now() - dt.timedelta(minutes=1))
    assert guest.get(f"/devices/{charger['id']}").status_code == 403
    assert guest.get("/devices").status_code == 403
    listed = tenant.admin.get(f"/devices/{charger['id']}/access").get_json()
    assert [a["active"] for a in listed] == [False]


def test_an_expired_invitation_answers_410(
    app: Flask, client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger = tenant.device()
    email = new_email(tenant)
    invite(tenant.admin, charger["id"], email, "guest")
    invitation_id, secret, url = mailed_link(api_smtp, email)
    shift(
        app, Invitation, Invitation.id == invitation_id, expires_at=now() - dt.timedelta(minutes=1)
    )

    for response in (
        opened(client, url),
        accept(anonymous(client), invitation_id, secret=secret, password=PASSWORD),
    ):
        assert response.status_code == 410
        body_ = response.get_json()
        assert body_["errors"] == {"invitation": ["expired"]}
        assert body_["message"].startswith("the invitation expired at ")
    listed = tenant.admin.get(
        f"/devices/{charger['id']}/invitations", query_string={"state": "expired"}
    ).get_json()
    assert [i["id"] for i in listed] == [invitation_id]
    assert tenant.admin.get(f"/devices/{charger['id']}/access").get_json() == []


def test_a_used_secret_is_refused_the_second_time(
    client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger = tenant.device()
    email = new_email(tenant)
    invite(tenant.admin, charger["id"], email, "guest")
    invitation_id, secret, url = mailed_link(api_smtp, email)
    first = accept(anonymous(client), invitation_id, secret=secret, password=PASSWORD)
    assert first.status_code == 200

    again = accept(anonymous(client), invitation_id, secret=secret, password="another-password-1")
    assert again.status_code == 409
    assert again.get_json()["errors"] == {"invitation": ["accepted"]}
    assert again.get_json()["message"] == "the invitation was already accepted"
    assert opened(client, url).status_code == 409
    # The first acceptance stands: the password of the second attempt changed nothing.
    anonymous(client).signed_in(email, PASSWORD)


def address() -> dict[str, str]:
    """A client address of its own (failures are counted per address too)."""
    return {"REMOTE_ADDR": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.7"}


def attempt(client: Client, invitation_id: str, secret: str, environ: dict[str, str]) -> Any:
    """POST an accept from the address ``environ`` names."""
    return client.request(
        "POST",
        f"/invitations/{invitation_id}/accept",
        json={"secret": secret, "password": PASSWORD},
        environ_overrides=environ,
    )


def test_a_wrong_secret_is_404_like_an_unknown_invitation_and_is_rate_limited(
    client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger = tenant.device()
    emails = [new_email(tenant), new_email(tenant)]
    for email in emails:
        invite(tenant.admin, charger["id"], email, "guest")
    (invitation_id, secret, _), (other_id, other_secret, _) = (
        mailed_link(api_smtp, email) for email in emails
    )

    attacker = address()
    wrong = attempt(
        client, invitation_id, secret[:-1] + ("B" if secret[-1] == "A" else "A"), attacker
    )
    unknown = attempt(client, secrets.token_hex(16), secret, attacker)
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.get_json() == unknown.get_json()
    assert wrong.get_json()["errors"] == {
        "json": {"secret": ["no invitation has this id and secret"]}
    }

    # Ten wrong secrets for one invitation, from anywhere: it is held back, even with the right
    # secret, whoever sends it, for the rest of the minute.
    for _ in range(9):
        assert attempt(client, invitation_id, "a-guess", address()).status_code == 404
    limited = attempt(client, invitation_id, secret, address())
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # Another invitation is not, even from the same address.
    fine = attempt(client, other_id, other_secret, attacker)
    assert fine.status_code == 200, fine.get_json()


def test_one_address_guessing_at_many_invitations_is_held_back(client: Client) -> None:
    attacker = address()
    for _ in range(100):  # each check costs a KDF run: a hundred a minute per address
        assert attempt(client, secrets.token_hex(16), "a-guess", attacker).status_code == 404
    limited = attempt(client, secrets.token_hex(16), "a-guess", attacker)
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert attempt(client, secrets.token_hex(16), "a-guess", address()).status_code == 404


def test_a_co_owner_is_invited_by_an_owner_and_attached_to_their_account(
    client: Client, api_smtp: SmtpServer, tenant: Tenant
) -> None:
    charger = tenant.device()
    first_access, first = new_owner(client, api_smtp, tenant, charger["id"])
    existing, existing_client = tenant.user()  # an account of the organization, no role

    invitation = invite(first, charger["id"], existing["email"], "owner")
    delivered = api_smtp.wait_for(lambda d: existing["email"] in d.rcpt_tos)
    assert delivered.message["Subject"].startswith("You are invited to co-own the charger")
    invitation_id, secret, url = mailed_link(api_smtp, existing["email"])
    assert opened(client, url).get_json()["account_exists"] is True
    # An existing account keeps its password: offering one is refused, naming it.
    refused = accept(anonymous(client), invitation_id, secret=secret, password="a-new-password-1")
    assert refused.status_code == 422 and "password" in refused.get_json()["errors"]["json"]
    done = accept(anonymous(client), invitation_id, secret=secret)
    assert done.status_code == 200
    assert done.get_json()["user_id"] == existing["id"] and done.get_json()["level"] == "owner"
    assert invitation["level"] == "owner"

    # The co-owner acts as an owner at once (same token: rights are read per request).
    guest_email = new_email(tenant)
    invite(existing_client, charger["id"], guest_email, "guest")
    levels = existing_client.get(f"/devices/{charger['id']}/access").get_json()
    assert sorted(a["level"] for a in levels) == ["owner", "owner"]
    # Inviting an owner again is a conflict naming the e-mail.
    again = first.post(
        f"/devices/{charger['id']}/invitations",
        json={"email": existing["email"], "level": "owner"},
    )
    assert again.status_code == 409 and "email" in again.get_json()["errors"]["json"]
    assert first_access["user_id"] != existing["id"]


def test_revoking_an_invitation(client: Client, api_smtp: SmtpServer, tenant: Tenant) -> None:
    charger = tenant.device()
    owner_access, owner = new_owner(client, api_smtp, tenant, charger["id"])
    email = new_email(tenant)
    invitation = invite(owner, charger["id"], email, "guest")
    invitation_id, secret, url = mailed_link(api_smtp, email)

    path = invitation["_links"]["self"]["href"]
    assert owner.delete(path).status_code == 204
    assert owner.get(path).get_json()["state"] == "revoked"
    for response in (
        opened(client, url),
        accept(anonymous(client), invitation_id, secret=secret, password=PASSWORD),
    ):
        assert response.status_code == 410
        assert response.get_json()["errors"] == {"invitation": ["revoked"]}
    assert owner.delete(path).status_code == 410

    # The owner's own invitation was accepted: revoking it is a conflict (remove the access).
    accepted = owner.get(
        f"/devices/{charger['id']}/invitations", query_string={"state": "accepted"}
    ).get_json()
    assert owner.delete(accepted[0]["_links"]["self"]["href"]).status_code == 409
    audit = tenant.admin.get(
        "/audit-log", query_string={"action": "invitation.revoke", "object_id": invitation_id}
    ).get_json()
    assert [e["actor_id"] for e in audit] == [f"user:{owner_access['user_id']}"]


@pytest.mark.parametrize(
    ("body_", "field"),
    [
        ({"email": "not-an-address", "level": "guest"}, "email"),
        ({"email": "a@b.test", "level": "admin"}, "level"),
        ({"email": "a@b.test"}, "level"),
        ({"level": "guest"}, "email"),
        (
            {"email": "a@b.test", "level": "owner", "valid_from": "2030-01-01T00:00:00Z"},
            "valid_from",
        ),
        (
            {"email": "a@b.test", "level": "owner", "valid_until": "2030-01-01T00:00:00Z"},
            "valid_until",
        ),
        (
            {
                "email": "a@b.test",
                "level": "guest",
                "valid_from": "2030-01-02T00:00:00Z",
                "valid_until": "2030-01-01T00:00:00Z",
            },
            "valid_until",
        ),
        (
            {"email": "a@b.test", "level": "guest", "valid_until": "2020-01-01T00:00:00Z"},
            "valid_until",
        ),
        (
            {"email": "a@b.test", "level": "guest", "valid_from": "2030-01-01T00:00:00"},
            "valid_from",
        ),
        (
            {"email": "a@b.test", "level": "guest", "expires_at": "2020-01-01T00:00:00Z"},
            "expires_at",
        ),
        (
            {"email": "a@b.test", "level": "guest", "expires_at": "2099-01-01T00:00:00Z"},
            "expires_at",
        ),
        ({"email": "a@b.test", "level": "guest", "admin": True}, "admin"),
    ],
)
def test_invitation_fields_are_validated_naming_the_field(
    tenant: Tenant, body_: dict[str, Any], field: str
) -> None:
    charger = tenant.device()
    response = tenant.admin.post(f"/devices/{charger['id']}/invitations", json=body_)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]["json"]


def test_who_may_invite(
    client: Client, api_smtp: SmtpServer, tenant: Tenant, other_tenant: Tenant
) -> None:
    charger = tenant.device()
    body_ = {"email": new_email(tenant), "level": "guest"}
    _, operator = tenant.user("operator")  # reads and commands devices, no users:write
    refused = operator.post(f"/devices/{charger['id']}/invitations", json=body_)
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"permission": ["users:write"]}
    _, stranger = other_tenant.user("organization-admin")
    assert stranger.post(f"/devices/{charger['id']}/invitations", json=body_).status_code == 404
    _, nobody = tenant.user()
    assert nobody.post(f"/devices/{charger['id']}/invitations", json=body_).status_code == 403
    _, org_admin = tenant.user("organization-admin")
    assert org_admin.post(f"/devices/{charger['id']}/invitations", json=body_).status_code == 201
    # An owner of one charger invites to that charger only.
    other = tenant.device()
    _, owner = new_owner(client, api_smtp, tenant, charger["id"])
    assert owner.post(f"/devices/{other['id']}/invitations", json=body_).status_code == 404


def test_an_invitation_that_cannot_be_mailed_is_not_kept(app: Flask, tenant: Tenant) -> None:
    charger = tenant.device()
    previous = app.extensions[MAILER]
    app.extensions[MAILER] = SmtpMailer(
        "127.0.0.1", free_port(), from_address="a@ampfleet.test", security="none", timeout=20
    )
    try:
        response = tenant.admin.post(
            f"/devices/{charger['id']}/invitations",
            json={"email": new_email(tenant), "level": "guest"},
        )
    finally:
        app.extensions[MAILER] = previous
    assert response.status_code == 503
    assert response.get_json()["message"] == "the invitation e-mail could not be sent; retry later"
    assert tenant.admin.get(f"/devices/{charger['id']}/invitations").get_json() == []
    audit = tenant.admin.get(
        "/audit-log", query_string={"action": "invitation.create", "organization_id": tenant.id}
    ).get_json()
    assert audit == []


def test_the_embedded_mode_logs_the_invitation(
    tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    charger = tenant.device()
    email = new_email(tenant)
    with caplog.at_level("INFO", logger="cloud.mail.console"):
        invite(tenant.admin, charger["id"], email, "guest")
    assert email in caplog.text and "/accept?secret=" in caplog.text
