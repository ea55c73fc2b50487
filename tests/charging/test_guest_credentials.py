"""Guest credentials end to end (docs/guest-credentials.md), on SQLite and MariaDB: a guest asks
the API for a credential (only a guest, only for their charger, inside their window, capped,
audited); the platform's public keys go into a simulated charger's NVS; with its link down the
charger lets the guest charge on the credential, and when the link returns the session reaches
the records as the guest's. Sessions under an unknown or withdrawn credential are stopped."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, select

from cloud.access import guestpass
from cloud.access.models import GuestCredential
from cloud.charging import sessions
from cloud.charging.models import ChargingSession, SessionSource, SessionState
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from firmware.core import contract
from firmware.core import guestpass as core
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.tools import nvs
from tests.charging.test_sessions import Records, charger_id, event, started
from tests.helpers import Tenant

DAY = dt.timedelta(days=1)


@pytest.fixture
def records(app: Flask, tenant: Tenant) -> Records:
    return Records(app, tenant)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def guest_of(records: Records, device_id: str, **window: Any) -> tuple[dict[str, Any], Any]:
    """A new user of the tenant with no role, made a guest of ``device_id``."""
    user, client = records.tenant.user()
    with records.db.transaction() as s:
        s.add(
            ChargerAccess(
                device_id=device_id, user_id=user["id"], level=AccessLevel.GUEST, **window
            )
        )
    return user, client


def test_a_guest_gets_a_credential_the_charger_accepts(
    app: Flask, tenant: Tenant, records: Records
) -> None:
    device = records.device()
    until = now() + 3 * DAY
    user, guest = guest_of(
        records, device.id, valid_from=now() - dt.timedelta(hours=1), valid_until=until
    )
    response = guest.post(f"/devices/{device.id}/guest-credential")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["device_id"] == device.id and body["guest_id"].startswith("gst-")
    assert dt.datetime.fromisoformat(body["not_after"]) == until.replace(microsecond=0)

    keys = guest.get("/guest-credentials/keys")
    assert keys.status_code == 200, keys.get_json()
    record = keys.get_json()["nvs_record"].encode()
    [key] = keys.get_json()["keys"]
    assert key["key_id"] == body["key_id"]
    verifier = core.Verifier(device.id, core.keys_from_nvs(record))
    at = int(now().timestamp() * 1000)
    assert verifier.check(body["credential"], at) == (body["guest_id"], None)

    with records.db.transaction() as s:
        row = s.get(GuestCredential, body["guest_id"])
        assert row is not None and (row.user_id, row.device_id) == (user["id"], device.id)
        assert guestpass.nvs_record(s, records.app.extensions["ampfleet.settings"]) == record
    audit = tenant.admin.get(
        "/audit-log",
        query_string={"action": "guest_credential.issue", "object_id": body["guest_id"]},
    ).get_json()
    assert [a["details"]["user_id"] for a in audit] == [user["id"]]


def test_the_window_is_capped_and_only_a_guest_of_the_charger_gets_one(
    records: Records,
) -> None:
    device, other = records.device(), records.device()
    _, forever = guest_of(records, device.id)  # a guest with no end
    body = forever.post(f"/devices/{device.id}/guest-credential").get_json()
    lasts = dt.datetime.fromisoformat(body["not_after"]) - dt.datetime.fromisoformat(
        body["not_before"]
    )
    assert dt.timedelta(days=7) - dt.timedelta(seconds=5) < lasts <= dt.timedelta(days=7)
    assert forever.post(f"/devices/{other.id}/guest-credential").status_code == 404

    _, owner = records.tenant.user("owner")  # charging:start through a role: no credential
    refused = owner.post(f"/devices/{device.id}/guest-credential")
    assert refused.status_code == 403 and refused.get_json()["errors"] == {"guest": ["not_a_guest"]}

    _, late = guest_of(records, device.id, valid_until=now() - dt.timedelta(minutes=1))
    assert late.post(f"/devices/{device.id}/guest-credential").status_code in (403, 404)
    assert records.tenant.admin.get("/guest-credentials/keys").status_code == 200


def test_a_guest_charges_offline_and_the_session_is_the_guests_when_the_link_returns(
    records: Records,
) -> None:
    device = records.device()
    user, guest = guest_of(records, device.id, valid_until=now() + DAY)
    credential = guest.post(f"/devices/{device.id}/guest-credential").get_json()
    nvs_record = guest.get("/guest-credentials/keys").get_json()["nvs_record"].encode()

    # The charger: the platform's keys in its NVS, its clock the real time, cards required.
    clock = SimClock(int(now().timestamp() * 1000))
    broker = MemoryBroker()
    charger = SimCharger(device.id, clock, broker=broker, seed=3)
    charger.storage.put(nvs.GUEST_KEYS, nvs_record)
    broker.publish(
        contract.topic(device.id, contract.CONFIG_DESIRED),
        contract.encode_config(1, {"rfid_required": True}),
        retain=True,
    )
    charger.run_for(15_000)
    broker.outage()  # no cloud link from here on
    charger.ev.plug_in(target_wh=5_000)
    charger.run_for(2_000)
    assert charger.start_with_guest_credential(credential["credential"]) is None
    charger.run_for(60_000)
    assert charger.plant.contactor and not charger.master.link.up
    charger.ev.unplug()
    charger.run_for(2_000)
    broker.restore()
    charger.run_for(120_000)

    # What the charging worker does with each event the link delivers.
    with records.db.transaction() as s:
        stored = s.get(Device, device.id)
        assert stored is not None
        for message in broker.messages(contract.topic(device.id, contract.EVENTS)):
            decoded = contract.decode_event(message.payload, None)
            if decoded.type.startswith("charging."):
                assert sessions.apply_event(s, stored, decoded, utcnow()) == []
        [record] = s.scalars(select(ChargingSession).where(ChargingSession.device_id == device.id))
        assert (record.source, record.user_id, record.id_tag, record.state) == (
            SessionSource.GUEST,
            user["id"],
            credential["guest_id"],
            SessionState.COMPLETED,
        )
        assert record.energy_wh > 0


def test_a_session_under_an_unknown_or_withdrawn_credential_is_stopped(
    records: Records,
) -> None:
    device = records.device()
    user, guest = guest_of(records, device.id, valid_until=now() + DAY)
    tag = guest.post(f"/devices/{device.id}/guest-credential").get_json()["guest_id"]
    with records.db.transaction() as s:
        stored = s.get(Device, device.id)
        assert stored is not None
        forged = sessions.apply_event(
            s,
            stored,
            event("charging.started", started(charger_id(), "gst-000000000000")),
            utcnow(),
        )
        assert len(forged) == 1
        fine = sessions.apply_event(
            s, stored, event("charging.started", started(charger_id(), tag)), utcnow()
        )
        assert fine == []
        s.execute(delete(ChargerAccess).where(ChargerAccess.user_id == user["id"]))
        withdrawn = sessions.apply_event(
            s, stored, event("charging.started", started(charger_id(), tag)), utcnow()
        )
        assert len(withdrawn) == 1
