"""Labels, release and pairing through the API (SQLite and MariaDB): the sheet's QR codes are the
codes, a reprint voids the old box code, the release binds box and charger, an outsider pairs
with both codes once, five wrong box codes lock the charger and the user out, unpair, transfer,
and a charger's factory-reset event (through the charging worker's message handler) clears its
owners and guests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

from flask import Flask
from PIL import Image
from sqlalchemy import select

from cloud.access import owners as access
from cloud.audit.models import AuditEntry
from cloud.charging.worker import ChargingWorker
from cloud.db import get_database, utcnow
from cloud.devicelink.endpoint import Endpoint
from cloud.devices.models import Device, LifecycleState
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.pairing import codes as codec
from cloud.pairing import service
from firmware.core import contract
from tests.helpers import Client, Tenant
from tests.pairing.test_codes import pdf_qr_texts, qr_texts


@dataclasses.dataclass(frozen=True)
class Charger:
    id: str
    charger_code: str
    box_code: str

    def codes(self, box_code: str | None = None) -> dict[str, str]:
        return {"charger_code": self.charger_code, "box_code": box_code or self.box_code}


def split(found: set[str]) -> tuple[str, str]:
    """(charger code, box code) of one charger's two labels."""
    (charger,) = [t for t in found if len(t) == 14]
    (box,) = [t for t in found if len(t) == 23]
    return charger, box


def released(app: Flask, tenant: Tenant) -> Charger:
    """A charger whose codes were issued and that left the factory (as the line does it)."""
    device = tenant.device(state="provisioned")
    with get_database(app).transaction() as session:
        (codes,) = service.issue_codes(
            session, [device["id"]], actor=None, hasher=app.extensions["ampfleet.hasher"]
        )
        stored = session.get(Device, device["id"])
        assert stored is not None
        stored.state = LifecycleState.RELEASED
    return Charger(device["id"], codes.charger_code, codes.box_code)


def audit(app: Flask, action: str, object_id: str | None = None) -> list[AuditEntry]:
    with get_database(app).transaction() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == action)
        if object_id is not None:
            stmt = stmt.where(AuditEntry.object_id == object_id)
        found = list(session.scalars(stmt.order_by(AuditEntry.id)))
        session.expunge_all()
        return found


def access_of(app: Flask, device_id: str) -> dict[int, AccessLevel]:
    with get_database(app).transaction() as session:
        rows = session.scalars(select(ChargerAccess).where(ChargerAccess.device_id == device_id))
        return {row.user_id: row.level for row in rows}


def no_box_code_in_the_audit_log(app: Flask, *box_codes: str) -> None:
    with get_database(app).transaction() as session:
        text = json.dumps([e.details for e in session.scalars(select(AuditEntry))])
    for box in box_codes:
        assert box not in text and codec.parse_box_code(box) not in text


def field_of(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.get_json()
    return body["errors"].get("json", body["errors"])


def test_labels_issue_the_codes_a_reprint_voids_the_box_code_and_the_release_binds_them(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    app = client.http.application
    _, station = tenant.user("factory-station")
    device = tenant.device(state="provisioned")

    png = station.post("/labels", json={"device_ids": [device["id"]], "format": "png"})
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.headers["Cache-Control"] == "no-store"
    charger, first_box = split(qr_texts(Image.open(io.BytesIO(png.data))))

    # A reprint: the Accept header asks for the PDF; the charger code stays, the box code is new.
    pdf = station.post(
        "/labels", json={"device_ids": [device["id"]]}, headers={"Accept": "application/pdf"}
    )
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    pages, found = pdf_qr_texts(pdf.data)
    assert pages == 1
    same_charger, box = split(found)
    assert same_charger == charger and box != first_box
    assert [e.details["generation"] for e in audit(app, "device.codes_reprint", device["id"])] == [
        2
    ]

    refused = station.post("/releases", json={"charger_code": charger, "box_code": first_box})
    assert refused.status_code == 422, refused.get_json()
    assert "box_code" in field_of(refused)
    assert station.get(f"/devices/{device['id']}").get_json()["state"] == "provisioned"

    done = station.post("/releases", json={"charger_code": charger.lower(), "box_code": box})
    assert done.status_code == 201, done.get_json()
    assert done.get_json()["state"] == "released"
    assert station.get(f"/devices/{device['id']}").get_json()["state"] == "released"
    (entry,) = audit(app, "device.release", device["id"])
    assert entry.details["state"] == ["provisioned", "released"]

    again = station.post("/releases", json={"charger_code": charger, "box_code": box})
    assert again.status_code == 409 and "charger_code" in field_of(again)
    late = station.post("/labels", json={"device_ids": [device["id"]]})
    assert late.status_code == 409 and "device_ids" in field_of(late)
    foreign = other_tenant.device(state="provisioned")
    theirs = station.post("/labels", json={"device_ids": [foreign["id"]]})
    assert theirs.status_code == 422 and "device_ids" in field_of(theirs)
    unknown = codec.grouped(codec.new_charger_code())
    missing = station.post("/releases", json={"charger_code": unknown, "box_code": box})
    assert missing.status_code == 404 and "charger_code" in field_of(missing)
    typo = station.post("/releases", json={"charger_code": charger[:-1] + "#", "box_code": box})
    assert typo.status_code == 422 and "charger_code" in field_of(typo)
    _, outsider = tenant.user("operator")
    assert outsider.post("/labels", json={"device_ids": [device["id"]]}).status_code == 403
    no_box_code_in_the_audit_log(app, first_box, box)


def test_an_outsider_pairs_once_then_transfers_and_the_receiver_unpairs(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    app = client.http.application
    charger = released(app, tenant)
    # Accounts without any role, of another organization than the charger's: app users.
    buyer_user, buyer = other_tenant.user()
    neighbour_user, neighbour = other_tenant.user()
    assert buyer.get(f"/devices/{charger.id}").status_code in (403, 404)  # no reach

    waiting = released(app, tenant)
    with get_database(app).transaction() as session:
        stored = session.get(Device, waiting.id)
        assert stored is not None
        stored.state = LifecycleState.PROVISIONED
    early = buyer.post("/pairings", json=waiting.codes())
    assert early.status_code == 409 and "charger_code" in field_of(early)

    paired = buyer.post("/pairings", json=charger.codes())
    assert paired.status_code == 201, paired.get_json()
    assert paired.get_json()["level"] == "owner"
    assert buyer.get(f"/devices/{charger.id}").status_code == 200
    assert access_of(app, charger.id) == {buyer_user["id"]: AccessLevel.OWNER}

    reused = neighbour.post("/pairings", json=charger.codes())
    assert reused.status_code == 409, reused.get_json()
    assert "box_code" in field_of(reused)
    outcomes = [e.details["outcome"] for e in audit(app, "pairing.attempt", charger.id)]
    assert outcomes == ["paired", "box_code_used"]

    _, station = tenant.user("factory-station")
    assert neighbour.delete(f"/pairings/{charger.id}").status_code == 403  # not theirs

    moved = buyer.post(f"/pairings/{charger.id}/transfer", json={"email": neighbour_user["email"]})
    assert moved.status_code == 200, moved.get_json()
    assert access_of(app, charger.id) == {neighbour_user["id"]: AccessLevel.OWNER}
    assert buyer.get(f"/devices/{charger.id}").status_code in (403, 404)  # no reach
    nobody = neighbour.post(
        f"/pairings/{charger.id}/transfer", json={"email": "nobody@nowhere.test"}
    )
    assert nobody.status_code == 422 and "email" in field_of(nobody)

    assert neighbour.delete(f"/pairings/{charger.id}").status_code == 204
    assert access_of(app, charger.id) == {}
    assert neighbour.get(f"/devices/{charger.id}").status_code in (403, 404)
    # The box code stays used after an unpair: a factory reset re-arms it.
    again = buyer.post("/pairings", json=charger.codes())
    assert again.status_code == 409 and "box_code" in field_of(again)
    assert [e.details["removed"][0]["level"] for e in audit(app, "pairing.unpair", charger.id)] == [
        "owner"
    ]
    # Roles without devices:pair (a factory station's) do not pair; an account without roles does.
    refused = station.post("/pairings", json=charger.codes())
    assert refused.status_code == 403 and refused.get_json()["errors"] == {
        "permission": ["devices:pair"]
    }
    no_box_code_in_the_audit_log(app, charger.box_code)


def test_five_wrong_box_codes_lock_out_the_charger_and_the_user(
    client: Client, tenant: Tenant
) -> None:
    app = client.http.application
    lockout = app.extensions["ampfleet.settings"].pairing_lockout
    target, other = released(app, tenant), released(app, tenant)
    guesser_user, guesser = tenant.user()
    _, owner = tenant.user()

    for left in (4, 3, 2, 1, 0):
        wrong = guesser.post("/pairings", json=target.codes(codec.grouped(codec.new_box_code())))
        assert wrong.status_code == 422, wrong.get_json()
        assert "box_code" in field_of(wrong)
        assert (f"{left} tries left" if left else "locked out") in wrong.get_json()["message"]

    # The guesser is locked out everywhere, even with the right codes of another charger...
    mine = guesser.post("/pairings", json=other.codes())
    assert mine.status_code == 429 and "user" in mine.get_json()["errors"]
    assert 0 < int(mine.headers["Retry-After"]) <= lockout
    # ... and the charger for everyone, even its rightful owner, until the lock ends.
    locked = owner.post("/pairings", json=target.codes())
    assert locked.status_code == 429 and "charger_code" in field_of(locked)
    assert access_of(app, target.id) == {} and access_of(app, other.id) == {}

    outcomes = [e.details["outcome"] for e in audit(app, "pairing.attempt", target.id)]
    assert outcomes == ["wrong_box_code"] * 5 + ["locked_out_charger"]
    tried_other = [
        e.details["outcome"]
        for e in audit(app, "pairing.attempt")
        if e.details["charger_code"] == other.charger_code
    ]
    assert tried_other == ["locked_out_user"]

    later = utcnow() + dt.timedelta(seconds=lockout + 1)
    with get_database(app).transaction() as session:
        assert service.locked_for(session, device_id=target.id, now=later, lockout=lockout) == 0
        assert (
            service.locked_for(session, user_id=guesser_user["id"], now=later, lockout=lockout) == 0
        )
        done = service.pair(
            session,
            target.charger_code,
            target.box_code,
            user=_principal(session, guesser_user["id"]),
            hasher=app.extensions["ampfleet.hasher"],
            lockout=lockout,
            now=later,
        )
        assert done.access.level is AccessLevel.OWNER
    no_box_code_in_the_audit_log(app, target.box_code, other.box_code)


def _principal(session: Any, user_id: int) -> Any:
    from cloud.identity.models import User
    from cloud.identity.principal import Principal

    user = session.get(User, user_id)
    return Principal("user", user.id, user.email, user.organization_id, ())


def test_a_factory_reset_event_clears_owners_and_guests_and_the_box_code_pairs_again(
    client: Client, tenant: Tenant, tmp_path: Path
) -> None:
    app = client.http.application
    charger = released(app, tenant)
    owner_user, owner = tenant.user()
    guest_user, _ = tenant.user()
    _, next_owner = tenant.user()
    assert owner.post("/pairings", json=charger.codes()).status_code == 201
    with get_database(app).transaction() as session:
        access.grant(
            session, charger.id, guest_user["id"], AccessLevel.GUEST, None, None, owner_user["id"]
        )
    assert len(access_of(app, charger.id)) == 2

    # The worker's handler of af/+/events messages, as its loop calls it (no broker needed).
    worker = ChargingWorker(
        get_database(app), Endpoint("127.0.0.1", 1, False, "worker", "x"), "test", tmp_path, False
    )
    topic = contract.topic(charger.id, contract.EVENTS)
    stale = contract.encode_event(int(time.time() * 1000) - 60_000, 7, "factory_reset", "info")
    assert worker.handle(topic, stale) == "ignored"  # older than the pairing: a late redelivery
    assert len(access_of(app, charger.id)) == 2
    reset = contract.encode_event(int(time.time() * 1000) + 1000, 8, "factory_reset", "warning")
    assert worker.handle(topic, reset) == "applied"
    assert access_of(app, charger.id) == {}
    (entry,) = audit(app, "device.factory_reset", charger.id)
    assert entry.actor_id == "system:charging" and len(entry.details["removed"]) == 2

    assert next_owner.post("/pairings", json=charger.codes()).status_code == 201


def test_a_label_request_names_devices_or_a_batch_not_both(tenant: Tenant) -> None:
    _, station = tenant.user("factory-station")
    device = tenant.device(state="provisioned")
    for body in ({}, {"device_ids": [device["id"]], "batch_id": 1}, {"batch_id": "7"}):
        refused = station.post("/labels", json=body)
        assert refused.status_code == 422, (body, refused.get_json())
    unknown = station.post("/labels", json={"batch_id": 999_999})
    assert unknown.status_code == 422 and "batch_id" in field_of(unknown)
