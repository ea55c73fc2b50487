"""The hardware IDs a charger announces at boot against its enrolled set: a swapped board is
quarantined (with an alarm) and listed; an unapproved device too; an admin approves them."""

from __future__ import annotations

from pathlib import Path

from cloud.audit.service import system_recorder
from cloud.db import get_database
from cloud.devices.hardware import HARDWARE_MISMATCHES, differences
from cloud.devices.models import Device
from cloud.devices.status_worker import StatusWorker
from firmware.core import contract
from firmware.host.charger import SimCharger, hardware_ids
from firmware.host.clock import SimClock
from firmware.host.network import MemoryBroker
from tests.ingest.test_pipeline import wait_for
from tests.link import Link, running_worker

CHIP = "58cf79000001"
METER, RELAY = "58cf79000002", "58cf79000003"


def test_differences_name_what_changed() -> None:
    enrolled = [METER, RELAY]
    same = {"chip": CHIP, "slaves": {"meter": METER, "relay": RELAY}}
    assert differences(CHIP, enrolled, same) == []
    assert differences(None, None, None) == []  # nothing enrolled: nothing to compare
    assert differences(CHIP, enrolled, None) == ["no hardware IDs announced"]
    swapped = {"chip": CHIP, "slaves": {"meter": METER, "relay": "aabbccddeeff"}}
    assert differences(CHIP, enrolled, swapped) == [
        f"missing slave {RELAY}",
        "unknown slave relay=aabbccddeeff",
    ]
    other_master = {"chip": "001122334455", "slaves": {"meter": METER, "relay": RELAY}}
    assert differences(CHIP, enrolled, other_master) == [f"master chip {CHIP} -> 001122334455"]


def test_the_simulated_charger_announces_its_hardware_at_boot() -> None:
    broker = MemoryBroker()
    charger = SimCharger("CHG-HW-1", SimClock(), broker=broker, seed=3)
    charger.run_for(5_000)
    status = contract.decode_status(broker.retained["af/CHG-HW-1/status"], None)
    assert status.hw == hardware_ids("CHG-HW-1", charger.family)
    assert set(status.hw["slaves"]) == {"meter", "relay"}
    # A slave that does not answer at boot is left out: the cloud sees it missing.
    charger.bus.silence(charger.address("relay"))
    charger.power_cycle()
    charger.run_for(60_000)  # reconnects after its back-off
    status = contract.decode_status(broker.retained["af/CHG-HW-1/status"], None)
    assert status.state == "online" and status.hw is not None
    assert set(status.hw["slaves"]) == {"meter"}


def _bind(link: Link, device_id: str, approved: bool = True) -> None:
    """Give the device an enrolled hardware set (as enrollment does), or take its approval."""
    with get_database(link.app).transaction() as session:
        device = session.get(Device, device_id)
        assert device is not None
        device.chip_id, device.slave_ids = CHIP, [METER, RELAY]
        if not approved:
            device.approved_at = device.approved_by = None


def test_a_swapped_board_or_an_unapproved_device_is_quarantined(link: Link, tmp_path: Path) -> None:
    swapped_id, swapped_pw = link.device()
    stranger_id, stranger_pw = link.device()
    _bind(link, swapped_id)
    _bind(link, stranger_id, approved=False)
    admin = link.admin
    alarms = HARDWARE_MISMATCHES._value.get()
    audit = system_recorder("status")
    with running_worker(link, StatusWorker, "status", tmp_path, audit=audit):
        topic = contract.topic(swapped_id, contract.STATUS)
        with link.mqtt(swapped_id, swapped_pw).connected() as device:
            same = {"chip": CHIP, "slaves": {"meter": METER, "relay": RELAY}}
            device.publish(topic, contract.encode_status("online", fw="1.0.0", hw=same))
            wait_for(
                lambda: admin.get(f"/devices/{swapped_id}/status").get_json()["online"],
                what="online",
            )
            assert admin.get(f"/devices/{swapped_id}").get_json()["quarantine_reason"] is None
            swapped = {"chip": CHIP, "slaves": {"meter": METER, "relay": "aabbccddeeff"}}
            device.publish(topic, contract.encode_status("online", fw="1.0.0", hw=swapped))
            wait_for(
                lambda: admin.get(f"/devices/{swapped_id}").get_json()["quarantine_reason"],
                what="quarantined",
            )
        with link.mqtt(stranger_id, stranger_pw).connected() as device:
            device.publish(
                contract.topic(stranger_id, contract.STATUS), contract.encode_status("online")
            )
            wait_for(
                lambda: admin.get(f"/devices/{stranger_id}").get_json()["quarantine_reason"],
                what="quarantined",
            )
    reason = admin.get(f"/devices/{swapped_id}").get_json()["quarantine_reason"]
    assert reason.startswith("hardware IDs changed:") and "aabbccddeeff" in reason
    assert HARDWARE_MISMATCHES._value.get() == alarms + 1
    stranger = admin.get(f"/devices/{stranger_id}").get_json()
    assert stranger["quarantine_reason"].startswith("not approved")
    assert stranger["state"] == "active"  # as registered; a quarantine never activates
    listed = admin.get("/quarantine", query_string={"page_size": 100}).get_json()
    assert {swapped_id, stranger_id} <= {d["id"] for d in listed}

    # An admin approves both: the repaired board's new IDs become its enrolled set.
    approved = admin.post(f"/devices/{swapped_id}/approve")
    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["quarantine_reason"] is None
    assert approved.get_json()["slave_ids"] == sorted([METER, "aabbccddeeff"])
    assert admin.post(f"/devices/{stranger_id}/approve").get_json()["approved_at"]
    again = admin.post(f"/devices/{stranger_id}/approve")
    assert again.status_code == 409 and again.get_json()["errors"]["reason"] == ["already_approved"]
    log = admin.get(
        "/audit-log", query_string={"object_type": "device", "object_id": swapped_id}
    ).get_json()
    assert {"device.quarantine", "device.approve", "device.whitelist"} <= {e["action"] for e in log}
