"""RFID cards and the local authorization list (docs/device-contract.md 4.9 and 14).

The I/O-free pieces (firmware/core/authlist.py and the card rules of charging.Charger), the
link's new downlink channel, whole simulated chargers on the in-memory broker (the retained
list applied, kept across reboots, cards accepted offline, refused, ignored, stopping their own
session) and the fleet simulator's charger against the real brokers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from firmware.core import authlist, contract, params
from firmware.core import charging as ch
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.host.fleet import Fleet
from tests.ingest.test_pipeline import wait_for
from tests.link import Link

from .conftest import DEVICE
from .test_charging import Rig
from .test_fleet import RunningFleet, running
from .test_host import command, events, result
from .test_link import Handler
from .test_link import Rig as LinkRig

__all__ = ["running"]  # a fixture used here, defined there

T0 = 1_790_000_000_000
OWNER = "04A1B2C3"
GUEST = "04D5E6F7"
STRANGER = "04FFFFFF"


# --- the local list ------------------------------------------------------------------------------


def test_the_local_list_applies_new_versions_only() -> None:
    local = authlist.LocalList()
    assert (local.version, len(local)) == (None, 0)
    assert local.refusal(OWNER, T0) == "unknown"  # no list yet: nobody
    assert local.apply(contract.AuthList(4, {OWNER: None, GUEST: T0 + 1000}))
    assert not local.apply(contract.AuthList(4, {}))  # a retained replay of the same version
    assert (local.version, len(local)) == (4, 2)
    assert local.refusal(OWNER, T0) is None
    assert local.refusal(GUEST, T0 + 999) is None
    assert local.refusal(GUEST, T0 + 1000) == "expired"  # ``until`` is the first ms refused
    assert local.refusal(STRANGER, T0) == "unknown"
    assert local.apply(contract.AuthList(3, {}))  # another version, even a lower one: the
    assert local.refusal(OWNER, T0) == "unknown"  # cloud's list is the truth


def test_the_local_list_survives_in_its_record() -> None:
    local = authlist.LocalList()
    local.apply(contract.AuthList(9, {OWNER: None, GUEST: T0}))
    again = authlist.LocalList()
    again.restore(local.dump())
    assert again.list == local.list
    for broken in (None, b"", b"{", b'{"v":1,"version":1,"tokens":{}}'):
        nothing = authlist.LocalList()
        nothing.restore(broken)
        assert nothing.version is None


# --- the card rules ------------------------------------------------------------------------------


def kinds(rig: Rig) -> list[tuple[str, Any]]:
    return [(kind, data) for kind, data in rig.take() if kind != "charging.state"]


def test_an_accepted_card_starts_and_the_same_card_stops() -> None:
    rig = Rig()
    rig.cycle("B")
    rig.charger.present_card(OWNER, None, rig.now)
    rig.cycle("B")
    rig.cycle("C")
    assert rig.charger.contactor
    assert kinds(rig) == [
        (
            "charging.started",
            {"session": "1", "connector": 1, "id_tag": OWNER, "meter_start_wh": 1000.0},
        )
    ]
    rig.charger.present_card(OWNER, "expired", rig.now)  # its own session: always stoppable
    rig.cycle("C")
    [(kind, data)] = kinds(rig)
    assert (kind, data["reason"], data["id_tag"]) == ("charging.stopped", "local", OWNER)
    assert not rig.charger.authorised and rig.charger.duty == ch.DUTY_OFF


def test_another_card_during_a_session_is_ignored() -> None:
    rig = Rig()
    rig.cycle("B")
    rig.charger.present_card(OWNER, None, rig.now)
    rig.cycle("C")
    rig.take()
    rig.charger.present_card(GUEST, None, rig.now)
    rig.charger.present_card(STRANGER, "unknown", rig.now)
    rig.cycle("C")
    assert kinds(rig) == [
        (
            "authorization.ignored",
            {"id_tag": GUEST, "connector": 1, "session": "1", "reason": "busy"},
        ),
        (
            "authorization.ignored",
            {"id_tag": STRANGER, "connector": 1, "session": "1", "reason": "busy"},
        ),
    ]
    assert rig.charger.in_session and rig.charger.contactor


@pytest.mark.parametrize("reason", ["unknown", "expired"])
def test_a_refused_card_is_reported_and_nothing_starts(reason: str) -> None:
    rig = Rig()
    rig.cycle("B")
    rig.charger.present_card(STRANGER, reason, rig.now)
    rig.cycle("C")
    assert kinds(rig) == [
        ("authorization.refused", {"id_tag": STRANGER, "connector": 1, "reason": reason})
    ]
    assert not rig.charger.in_session and not rig.charger.contactor


def test_a_card_shown_before_the_cable_waits_a_minute_for_the_ev() -> None:
    rig = Rig()
    rig.cycle("A")
    rig.charger.present_card(OWNER, None, rig.now)
    for _ in range(ch.CARD_WAIT_MS // 500 - 2):
        rig.cycle("A")
    rig.cycle("B")
    assert kinds(rig)[0][1]["id_tag"] == OWNER
    late = Rig()
    late.cycle("A")
    late.charger.present_card(OWNER, None, late.now)
    for _ in range(ch.CARD_WAIT_MS // 500):
        late.cycle("A")
    late.cycle("B")
    assert not late.charger.in_session and kinds(late) == []


def test_a_card_before_plug_and_charge_names_the_session() -> None:
    rig = Rig()
    rig.cycle("A")
    rig.charger.present_card(OWNER, None, rig.now)
    rig.cycle("B", auto_authorise=True)
    assert kinds(rig)[0][1]["id_tag"] == OWNER
    anonymous = Rig()
    anonymous.cycle("B", auto_authorise=True)
    assert "id_tag" not in kinds(anonymous)[0][1]


# --- the link: auth/list is a downlink channel ---------------------------------------------------


class ListHandler(Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lists: list[contract.AuthList] = []

    def on_auth_list(self, auth_list: contract.AuthList, now_ms: int) -> None:
        self.lists.append(auth_list)


def test_the_link_hands_auth_lists_over_and_rejects_bad_ones(
    family: params.Family, broker: MemoryBroker
) -> None:
    topic = contract.topic(DEVICE, contract.AUTH_LIST)
    broker.publish(topic, contract.encode_auth_list(2, {OWNER: None}), retain=True)
    rig = LinkRig(family, broker)
    handler = ListHandler()
    rig.link.handler = handler
    rig.connect()  # the retained list comes with the subscription
    assert [(a.version, a.tokens) for a in handler.lists] == [(2, {OWNER: None})]
    rig.cloud(contract.AUTH_LIST, b"", retain=True)  # cleared: not a list, nothing changes
    rig.cloud(contract.AUTH_LIST, b'{"v":1,"version":3,"tokens":{"04":1}}')
    rig.cloud(contract.AUTH_LIST, b'{"v":1,"version":3,"tokens":[],"extra":1}')
    assert len(handler.lists) == 1
    rejected = [(e.type, e.data["reason"], e.data.get("field")) for e in rig.events()]
    assert rejected == [
        ("message.rejected", "bad_type", "tokens"),
        ("message.rejected", "unknown_field", "extra"),
    ]
    rig.link.handler = Handler()  # an application that knows nothing of lists
    rig.cloud(contract.AUTH_LIST, contract.encode_auth_list(4, {}))
    assert rig.events()[-1].type == "message.failed" and rig.link.errors == 1


# --- whole chargers ------------------------------------------------------------------------------


def publish_list(broker: MemoryBroker, version: int, tokens: dict[str, int | None]) -> None:
    topic = contract.topic(DEVICE, contract.AUTH_LIST)
    broker.publish(topic, contract.encode_auth_list(version, tokens), retain=True)


def require_rfid(broker: MemoryBroker) -> None:
    desired = contract.encode_config(1, {"rfid_required": True})
    broker.publish(contract.topic(DEVICE, contract.CONFIG_DESIRED), desired, retain=True)


def test_the_list_is_applied_once_per_version_and_kept_across_reboots(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    publish_list(broker, 1, {OWNER: None, GUEST: None})
    charger.run_for(1_000)
    applied = events(broker, "auth.list_applied")
    assert [e.data for e in applied] == [{"version": 1, "tokens": 2}]
    assert charger.storage.get("auth") == contract.encode_auth_list(1, {OWNER: None, GUEST: None})
    command(broker, "r1", "reboot", {})
    charger.run_for(30_000)  # reconnects: the retained list again, same version
    assert charger.reboots == 1 and charger.master.link.up
    assert len(events(broker, "auth.list_applied")) == 1
    assert charger.master.auth.version == 1  # from flash, before the broker said anything
    publish_list(broker, 2, {OWNER: None})
    charger.run_for(1_000)
    assert [e.data for e in events(broker, "auth.list_applied")][-1] == {"version": 2, "tokens": 1}


def test_cards_start_stop_and_are_refused_on_a_charger_that_requires_them(
    charger: SimCharger, broker: MemoryBroker, clock: SimClock
) -> None:
    require_rfid(broker)
    guest_until = clock.now_ms() + 600_000
    publish_list(broker, 1, {OWNER: None, GUEST: guest_until})
    charger.run_for(1_000)
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(5_000)
    assert not charger.master.charger.in_session  # RFID required: waits for a card

    charger.present_card(STRANGER)
    charger.run_for(2_000)
    assert [e.data for e in events(broker, "authorization.refused")] == [
        {"id_tag": STRANGER, "connector": 1, "reason": "unknown"}
    ]
    assert not charger.plant.contactor

    charger.present_card(OWNER)
    charger.run_for(5_000)
    assert charger.plant.contactor
    [started] = events(broker, "charging.started")
    assert started.data["id_tag"] == OWNER and started.data["session"] == "1"

    charger.present_card(GUEST)  # someone else's card during the session
    charger.run_for(2_000)
    [ignored] = events(broker, "authorization.ignored")
    assert ignored.data == {"id_tag": GUEST, "connector": 1, "session": "1", "reason": "busy"}
    assert charger.plant.contactor

    charger.run_for(60_000)
    charger.present_card(OWNER)  # the same card again: the driver ends it
    charger.run_for(5_000)
    [stopped] = events(broker, "charging.stopped")
    assert (stopped.data["reason"], stopped.data["id_tag"]) == ("local", OWNER)
    assert stopped.data["energy_wh"] > 100 and not charger.plant.contactor

    charger.run_for(600_000)  # past the guest's window
    charger.present_card(GUEST)
    charger.run_for(2_000)
    assert events(broker, "authorization.refused")[-1].data["reason"] == "expired"
    assert not charger.master.charger.in_session


def test_a_known_card_works_while_the_charger_is_offline(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    require_rfid(broker)
    publish_list(broker, 1, {OWNER: None})
    charger.run_for(1_000)
    broker.outage()
    offline_from = charger.clock.now_ms()
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(2_000)
    charger.present_card(OWNER)
    charger.run_for(30_000)
    assert charger.plant.contactor and not charger.master.link.up
    charger.present_card(OWNER)
    charger.run_for(5_000)
    assert not charger.plant.contactor
    broker.restore()
    charger.run_for(400_000)
    sessions = [
        (e.type, e.data["id_tag"], e.ts >= offline_from)
        for e in events(broker)
        if e.type in ("charging.started", "charging.stopped")
    ]
    assert sessions == [("charging.started", OWNER, True), ("charging.stopped", OWNER, True)]


def test_cards_name_plug_and_charge_sessions_but_are_not_needed(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    publish_list(broker, 1, {OWNER: None})
    charger.ev.plug_in(target_wh=200)  # rfid_required is false by default
    charger.run_for(5_000)
    charger.ev.unplug()
    charger.run_for(2_000)
    charger.present_card(OWNER)
    charger.run_for(1_000)
    charger.ev.plug_in(target_wh=200)
    charger.run_for(5_000)
    started = [e.data for e in events(broker, "charging.started")]
    assert "id_tag" not in started[0] and started[1]["id_tag"] == OWNER
    command(broker, "x", "charging.stop", {"connector": 1})
    charger.run_for(1_000)
    assert result(broker, "x").status == "ok"


# --- against the real brokers ------------------------------------------------------------------


def test_a_retained_list_and_a_card_session_over_a_real_broker(
    link: Link, running: Callable[[Fleet], RunningFleet]
) -> None:
    device_id, password = link.device(hardware_family="ac22-3p")
    list_topic = contract.topic(device_id, contract.AUTH_LIST)
    with link.service() as cloud:
        assert not cloud.subscribe(contract.topic(device_id, contract.EVENTS)).is_failure
        # What the cloud's list publisher does: the complete list, retained, before the
        # charger is even on line.
        cloud.client.publish(
            list_topic, contract.encode_auth_list(7, {OWNER: None}), qos=1, retain=True
        ).wait_for_publish(10)
        fleet = running(
            Fleet([(device_id, password)], link.host, link.port, tick_ms=100, idle_mean_s=1e9)
        )
        wait_for(lambda: fleet.call(lambda: len(fleet.fleet.chargers)) == 1, what="booted")
        charger = fleet.call(lambda: fleet.fleet.chargers[0])
        seen: list[contract.Event] = []

        def arrived(kind: str, count: int = 1) -> Callable[[], bool]:
            def check() -> bool:
                while not cloud.messages.empty():
                    seen.append(contract.decode_event(cloud.messages.get().payload, None))
                return len([e for e in seen if e.type == kind]) >= count

            return check

        wait_for(arrived("auth.list_applied"), timeout=30, what="auth.list_applied")
        assert [e.data for e in seen if e.type == "auth.list_applied"] == [
            {"version": 7, "tokens": 1}
        ]
        fleet.call(lambda: charger.present_card(STRANGER))
        wait_for(arrived("authorization.refused"), what="authorization.refused")
        fleet.call(lambda: charger.present_card(OWNER))
        fleet.call(lambda: charger.ev.plug_in(target_wh=50_000))
        wait_for(arrived("charging.started"), what="charging.started")
        fleet.call(lambda: charger.present_card(OWNER))
        wait_for(arrived("charging.stopped"), what="charging.stopped")
        by_type = {e.type: e.data for e in seen}
        assert by_type["authorization.refused"]["id_tag"] == STRANGER
        assert by_type["charging.started"]["id_tag"] == OWNER
        assert (by_type["charging.stopped"]["reason"], by_type["charging.stopped"]["id_tag"]) == (
            "local",
            OWNER,
        )
        cloud.client.publish(list_topic, b"", qos=1, retain=True).wait_for_publish(10)


def test_a_factory_reset_forgets_the_owners_cards_and_reaches_the_cloud_after_a_reboot(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    publish_list(broker, 1, {OWNER: None})
    charger.run_for(1_000)
    assert charger.storage.get("auth")
    broker.outage()
    charger.factory_reset()  # the owner holds the service button, offline
    charger.run_for(2_000)
    assert charger.storage.get("auth") is None and charger.storage.get("reset") == b"1"
    assert charger.master.auth.refusal(OWNER, charger.clock.now_ms()) == "unknown"
    charger.power_cycle()  # the report waits in NVS, not in the offline buffer
    broker.restore()
    charger.run_for(60_000)
    [reset] = events(broker, "factory_reset")
    assert reset.severity == "warning"
    assert charger.storage.get("reset") is None
    charger.power_cycle()
    charger.run_for(30_000)
    assert len(events(broker, "factory_reset")) == 1  # reported once
