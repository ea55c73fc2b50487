"""Charging sessions (docs/device-contract.md 14) on the native charger.

The I/O-free machine (firmware/core/charging.py: numbering, the NVS record, every stop
reason, the night window), whole simulated chargers on the in-memory broker (ids across
reboots, power loss, remote start/stop with an id_tag, night-only charging, sessions that
happen offline and their replay), and one charger of the fleet simulator against the real
brokers (an offline session reaches the cloud once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from firmware.core import charging as ch
from firmware.core import contract
from firmware.host import MemoryBroker, SimCharger, SimClock
from firmware.host.fleet import Fleet
from tests.ingest.test_pipeline import wait_for
from tests.link import Link
from tests.mqtt import Message

from .conftest import DEVICE
from .test_charging import Rig
from .test_fleet import RunningFleet, running
from .test_host import command, events, result

__all__ = ["running"]  # a fixture used here, defined there

APP_TAG = "app-abcdef123456"


def take(rig: Rig, kind: str) -> list[dict[str, Any]]:
    """The data of the events of one type the machine produced (all of them are cleared)."""
    return [data for got, data in rig.take() if got == kind]


# --- the machine -------------------------------------------------------------------------------


def test_started_and_stopped_carry_the_contract_fields() -> None:
    rig = Rig()
    rig.cycle("B")
    assert rig.charger.authorise(APP_TAG)
    rig.cycle("B")
    assert take(rig, "charging.started") == [
        {"session": "1", "connector": 1, "id_tag": APP_TAG, "meter_start_wh": 1000.0}
    ]
    assert not rig.charger.authorise("app-other0000000")  # the tag is fixed at the start
    rig.cycle("C")
    rig.energy = 1234.5
    for _ in range(4):
        rig.cycle("C")
    assert rig.charger.stop(rig.now, "remote")
    stopped = take(rig, "charging.stopped")
    assert stopped == [
        {
            "session": "1",
            "connector": 1,
            "id_tag": APP_TAG,
            "meter_stop_wh": 1234.5,
            "energy_wh": 234.5,
            "duration_s": 2,
            "reason": "remote",
        }
    ]
    # What the codec would send: the data are an open map, checked only for JSON sanity.
    payload = contract.encode_event(1, 0, "charging.stopped", "info", stopped[0])
    assert contract.decode_event(payload, None).data == stopped[0]


def test_plug_and_charge_sessions_have_no_id_tag_and_count_up() -> None:
    rig = Rig()
    for number in ("1", "2", "3"):
        rig.cycle("A")
        rig.cycle("B", auto_authorise=True)
        started = take(rig, "charging.started")
        assert started == [{"session": number, "connector": 1, "meter_start_wh": 1000.0}]
    assert rig.charger.record() == {
        "n": 3,
        "open": {
            "session": "3",
            "id_tag": None,
            "start_ms": rig.now,
            "start_wh": 1000.0,
            "wh": 1000.0,
            "ms": rig.now,
        },
    }


def test_the_counter_survives_a_reboot() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("A")
    record = rig.charger.record()
    assert record == {"n": 1}
    after = Rig()
    after.charger.restore(record, after.now)
    assert after.take() == []  # nothing was open
    after.cycle("B", auto_authorise=True)
    assert take(after, "charging.started")[0]["session"] == "2"


def test_a_session_open_at_boot_is_closed_as_a_power_loss() -> None:
    rig = Rig()
    rig.cycle("B")
    rig.charger.authorise("04A1B2C3")
    rig.cycle("C")
    rig.energy = 1800.0
    rig.now += 90_000
    rig.cycle("C")
    record = rig.charger.record()
    last_reading_ms = rig.now
    rebooted = ch.Charger()
    rebooted.restore(record, last_reading_ms + 3_600_000)  # back an hour later
    assert rebooted.events == [
        (
            "charging.stopped",
            "info",
            {
                "session": "1",
                "connector": 1,
                "id_tag": "04A1B2C3",
                "meter_stop_wh": 1800.0,
                "energy_wh": 800.0,
                "duration_s": 90,  # up to the last reading saved, not the hour without power
                "reason": "power_loss",
            },
        )
    ]
    assert not rebooted.in_session and rebooted.record() == {"n": 1}
    assert rebooted.save_due(0)  # the closed record must replace the open one


@pytest.mark.parametrize(
    "record",
    [
        None,
        [],
        {},
        {"n": "7"},
        {"n": 4, "open": {"session": 4}},
        {"n": 4, "open": {"session": "4", "start_ms": 1, "ms": 2, "start_wh": "x", "wh": 1}},
        {"n": 4, "open": "4"},
    ],
)
def test_a_torn_record_is_not_billed(record: Any) -> None:
    charger = ch.Charger()
    charger.restore(record, 10_000)
    assert charger.events == [] and not charger.in_session
    expected = 4 if isinstance(record, dict) and record.get("n") == 4 else 0
    assert charger.sessions == expected


def test_the_record_is_saved_at_start_and_end_and_every_minute_of_charging() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    assert rig.charger.save_due(rig.now)  # started
    rig.charger.saved(rig.now)
    saved_at = rig.now
    rig.cycle("C")
    rig.energy = 1100.0
    rig.cycle("C")
    assert not rig.charger.save_due(rig.now)  # moved, but saved less than a minute ago
    rig.now = saved_at + ch.SAVE_MS
    rig.cycle("C")
    assert rig.charger.save_due(rig.now)
    rig.charger.saved(rig.now)
    rig.now += 2 * ch.SAVE_MS
    rig.cycle("B")
    assert not rig.charger.save_due(rig.now)  # nothing moved (the EV is full)
    rig.cycle("A")
    assert rig.charger.save_due(rig.now)  # ended


@pytest.mark.parametrize(
    ("reason", "reported"),
    [("remote", "remote"), ("local", "local"), ("deauthorized", "deauthorized"), ("x", "other")],
)
def test_stop_reasons_are_the_contracts(reason: str, reported: str) -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.charger.stop(rig.now, reason)
    assert take(rig, "charging.stopped")[0]["reason"] == reported


def test_a_fault_that_lasts_ends_the_session() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.cycle("C")
    rig.charger.set_fault("relay_offline")
    rig.cycle("C")
    steps = (ch.FAULT_END_MS - 1000) // 500
    for _ in range(steps):
        rig.cycle("F")
    assert rig.charger.in_session  # a short fault only suspends it
    rig.take()
    rig.cycle("F")
    rig.cycle("F")
    assert [data["reason"] for data in take(rig, "charging.stopped")] == ["fault"]
    rig.charger.set_fault(None)
    rig.cycle("F")
    rig.cycle("B")
    rig.cycle("C")
    assert not rig.charger.in_session and not rig.charger.contactor  # a new start is needed


def test_a_fault_that_clears_in_time_keeps_the_session() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True)
    rig.charger.set_fault("overtemp")
    for _ in range(10):
        rig.cycle("F")
    rig.charger.set_fault(None)
    for _ in range(200):
        rig.cycle("B")
    assert rig.charger.in_session and take(rig, "charging.stopped") == []


@pytest.mark.parametrize(
    ("second", "start", "end", "offset", "inside"),
    [
        (8 * 3600, 8 * 3600, 18 * 3600, 0, True),
        (18 * 3600, 8 * 3600, 18 * 3600, 0, False),
        (7 * 3600, 8 * 3600, 18 * 3600, 3600, True),  # 08:00 local
        (23 * 3600, 22 * 3600, 6 * 3600, 0, True),
        (3 * 3600, 22 * 3600, 6 * 3600, 0, True),
        (6 * 3600, 22 * 3600, 6 * 3600, 0, False),
        (12 * 3600, 22 * 3600, 6 * 3600, 0, False),
        (21 * 3600, 22 * 3600, 6 * 3600, 3600, True),  # 22:00 local
        (1 * 3600, 22 * 3600, 6 * 3600, -7200, True),  # 23:00 the day before, local
        (12 * 3600, 6 * 3600, 6 * 3600, 0, True),  # start == end: all day
    ],
)
def test_night_window(second: int, start: int, end: int, offset: int, inside: bool) -> None:
    midnight = 1_790_035_200_000  # a UTC midnight
    assert midnight % 86_400_000 == 0
    assert ch.in_window(midnight + second * 1000, start, end, offset) is inside


def test_the_night_window_ending_ends_the_session() -> None:
    rig = Rig()
    rig.cycle("B", auto_authorise=True, window=False)  # plugged in during the day
    assert rig.charger.in_session and rig.charger.duty == ch.DUTY_OFF  # waits for the night
    rig.cycle("B", window=True)
    assert rig.charger.duty == 53.33
    rig.cycle("C", window=True)
    assert rig.charger.contactor
    rig.take()
    rig.cycle("C", window=False)
    assert [d["reason"] for d in take(rig, "charging.stopped")] == ["schedule_end"]
    assert rig.charger.duty == ch.DUTY_OFF and not rig.charger.authorised
    for _ in range(7):
        rig.cycle("C", window=False)  # the EV is given its grace period, then it opens
    assert not rig.charger.contactor
    rig.cycle("B", window=True)  # the next night: the session is over, nothing restarts
    assert not rig.charger.in_session


# --- whole chargers on the in-memory broker ------------------------------------------------------


def stopped_sessions(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [e.data for e in events(broker, "charging.stopped")]


def started_sessions(broker: MemoryBroker) -> list[dict[str, Any]]:
    return [e.data for e in events(broker, "charging.started")]


def test_session_ids_are_never_reused_across_reboots(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    charger.ev.plug_in(target_wh=200)
    charger.run_for(10_000)
    charger.ev.unplug()
    charger.run_for(2_000)
    command(broker, "r1", "reboot", {})
    charger.run_for(20_000)
    assert charger.reboots == 1 and charger.master.link.up
    charger.ev.plug_in(target_wh=200)
    charger.run_for(10_000)
    charger.ev.unplug()
    charger.run_for(2_000)
    assert [d["session"] for d in started_sessions(broker)] == ["1", "2"]
    assert [(d["session"], d["reason"]) for d in stopped_sessions(broker)] == [
        ("1", "ev_disconnected"),
        ("2", "ev_disconnected"),
    ]
    assert json.loads(charger.storage.get("session") or b"") == {"n": 2}


def test_a_power_loss_during_a_session_is_reported_at_boot(
    charger: SimCharger, broker: MemoryBroker, clock: SimClock
) -> None:
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(150_000)  # charging: the record is saved every minute
    assert charger.plant.contactor
    saved = json.loads(charger.storage.get("session") or b"")["open"]
    assert saved["session"] == "1" and saved["wh"] > saved["start_wh"]
    clock.advance(600_000)  # no power for ten minutes: nothing steps
    charger.power_cycle()
    back_at = clock.now_ms()
    charger.run_for(30_000)
    assert charger.reboots == 1 and charger.master.link.up
    [event] = events(broker, "charging.stopped")
    assert event.ts >= back_at  # reported at boot
    # Closed with what the flash held: the last reading saved, and its time.
    assert event.data == {
        "session": "1",
        "connector": 1,
        "meter_stop_wh": saved["wh"],
        "energy_wh": round(saved["wh"] - saved["start_wh"], 3),
        "duration_s": (saved["ms"] - saved["start_ms"]) // 1000,
        "reason": "power_loss",
    }
    stopped = event.data
    assert 60 <= stopped["duration_s"] <= 150
    # The EV is still there and nothing asks for a card: a new session, with a new number.
    started = started_sessions(broker)
    assert [d["session"] for d in started] == ["1", "2"]
    assert started[1]["meter_start_wh"] >= stopped["meter_stop_wh"]
    assert charger.plant.contactor


def test_remote_start_with_an_id_tag_and_remote_stop(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    desired = contract.encode_config(1, {"rfid_required": True})
    broker.publish(contract.topic(DEVICE, contract.CONFIG_DESIRED), desired, retain=True)
    charger.ev.plug_in(target_wh=5_000)
    charger.run_for(5_000)
    assert not charger.master.charger.in_session
    command(broker, "s0", "charging.start", {"connector": 1, "id_tag": "x" * 21})
    command(broker, "s1", "charging.start", {"connector": 1, "id_tag": ""})
    command(broker, "s2", "charging.start", {"connector": 1, "id_tag": APP_TAG})
    charger.run_for(5_000)
    assert (result(broker, "s0").reason, result(broker, "s0").result) == (
        "bad_args",
        {"args": {"id_tag": "longer than 20 characters"}},
    )
    assert (result(broker, "s1").reason, result(broker, "s1").result) == (
        "bad_args",
        {"args": {"id_tag": "empty"}},
    )
    assert result(broker, "s2").status == "ok"
    assert started_sessions(broker)[0]["id_tag"] == APP_TAG
    assert charger.plant.contactor
    command(broker, "s3", "charging.start", {"connector": 1, "id_tag": "app-zzzzzzzzzzzz"})
    charger.run_for(1_000)
    assert (result(broker, "s3").status, result(broker, "s3").reason) == (
        "rejected",
        "session running",
    )
    charger.run_for(60_000)
    command(broker, "t1", "charging.stop", {"connector": 1})
    charger.run_for(5_000)
    assert result(broker, "t1").status == "ok"
    [stopped] = stopped_sessions(broker)
    assert (stopped["reason"], stopped["id_tag"], stopped["session"]) == ("remote", APP_TAG, "1")
    assert stopped["energy_wh"] == pytest.approx(
        stopped["meter_stop_wh"] - started_sessions(broker)[0]["meter_start_wh"], abs=0.001
    )
    assert stopped["energy_wh"] > 100 and not charger.plant.contactor


def test_night_only_charging_ends_with_the_window(clock: SimClock, broker: MemoryBroker) -> None:
    # SimClock starts at 14:13:20 UTC; the site is an hour ahead: 15:13:20 local time.
    sim = SimCharger(DEVICE, clock, broker=broker, seed=7, night_only=True, utc_offset_s=3600)
    window = {"night_window_start_s": 15 * 3600 + 15 * 60, "night_window_end_s": 15 * 3600 + 1800}
    desired = contract.encode_config(1, window)
    broker.publish(contract.topic(DEVICE, contract.CONFIG_DESIRED), desired, retain=True)
    sim.run_for(15_000)
    assert sim.master.link.up and sim.master.settings.get("night_window_end_s") == 55_800
    sim.ev.plug_in(target_wh=50_000)
    sim.run_for(20_000)
    assert sim.master.charger.in_session and not sim.plant.contactor  # before 15:15
    assert sim.plant.energy_wh == 0
    sim.run_for(110_000)  # 15:15:45
    assert sim.plant.contactor
    sim.run_for(900_000)  # 15:30:45: the window closed
    assert not sim.plant.contactor and not sim.master.charger.in_session
    [stopped] = stopped_sessions(broker)
    assert stopped["reason"] == "schedule_end"
    # 15 minutes at 16 A on three phases: about 2.7 kWh.
    assert stopped["energy_wh"] == pytest.approx(3 * 230.1 * 16 * 0.99 * 0.25, rel=0.02)
    sim.run_for(60_000)
    assert sim.ev.plugged and len(started_sessions(broker)) == 1  # nothing restarts


# --- offline: the outbox and its replay ------------------------------------------------------


def session_events(broker: MemoryBroker) -> list[contract.Event]:
    return [e for e in events(broker) if e.type in ("charging.started", "charging.stopped")]


def offline_sessions(charger: SimCharger, broker: MemoryBroker, count: int) -> tuple[int, int]:
    """``count`` plug-and-charge sessions while the broker is away: (outage start, end) ms."""
    broker.outage()
    went = charger.clock.now_ms()
    charger.run_for(2_000)
    for _ in range(count):
        charger.ev.plug_in(target_wh=50_000)
        charger.run_for(60_000)
        charger.ev.unplug()
        charger.run_for(5_000)
    assert not charger.master.link.up and not session_events(broker)
    back = charger.clock.now_ms()
    broker.restore()
    return went, back


def test_offline_sessions_are_replayed_once_with_their_own_ts_and_seq(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    before = len(events(broker))
    went, back = offline_sessions(charger, broker, 2)
    charger.run_for(400_000)  # back-off (at most 300 s), then the paced replay
    assert len(charger.master.link.outbox) == 0
    replayed = session_events(broker)
    assert [(e.type, e.data["session"]) for e in replayed] == [
        ("charging.started", "1"),
        ("charging.stopped", "1"),
        ("charging.started", "2"),
        ("charging.stopped", "2"),
    ]
    assert all(went <= e.ts < back for e in replayed)  # when they happened, not when sent
    assert all(e.data["reason"] == "ev_disconnected" for e in replayed[1::2])
    assert [e.data["energy_wh"] > 100 for e in replayed[1::2]] == [True, True]  # 11 kW, 1 min
    seqs = [e.seq for e in events(broker)]
    assert len(seqs) > before and seqs == list(range(len(seqs)))  # each once, in order


def test_a_replay_cut_short_publishes_each_event_once(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    offline_sessions(charger, broker, 3)
    waiting = len(charger.master.link.outbox)
    assert waiting > 30
    for _ in range(800):  # until the link is back and has replayed a few, not all
        charger.run_for(500)
        if len(charger.master.link.outbox) < waiting - 5:
            break
    assert charger.master.link.up and len(charger.master.link.outbox) > 5
    broker.drop(DEVICE)  # the connection goes again in the middle of the replay
    charger.run_for(400_000)
    assert charger.master.link.up and len(charger.master.link.outbox) == 0
    seqs = [e.seq for e in events(broker)]
    assert seqs == list(range(len(seqs)))
    telemetry_seqs = [
        contract.decode_telemetry(m.payload, None).seq
        for m in broker.messages(contract.topic(DEVICE, contract.TELEMETRY))
    ]
    assert telemetry_seqs == list(range(len(telemetry_seqs)))
    sessions = [(e.type, e.data["session"]) for e in session_events(broker)]
    assert sessions == [
        (kind, number) for number in "123" for kind in ("charging.started", "charging.stopped")
    ]


# --- against the real brokers ------------------------------------------------------------------


def test_an_offline_session_reaches_the_cloud_once_over_a_real_broker(
    link: Link, running: Callable[[Fleet], RunningFleet]
) -> None:
    device_id, password = link.device(hardware_family="ac22-3p")
    with link.service() as cloud:
        assert not cloud.subscribe(contract.topic(device_id, contract.EVENTS)).is_failure
        # No EV arrives by itself (idle_mean_s): the test plugs them in.
        fleet = running(
            Fleet([(device_id, password)], link.host, link.port, tick_ms=100, idle_mean_s=1e9)
        )
        wait_for(lambda: fleet.call(lambda: len(fleet.fleet.chargers)) == 1, what="booted")
        charger = fleet.call(lambda: fleet.fleet.chargers[0])
        transport = fleet.fleet.transports[0]
        wait_for(lambda: fleet.call(lambda: charger.master.link.up), timeout=30, what="online")

        fleet.call(lambda: transport.set_network(False))
        wait_for(lambda: fleet.call(lambda: not charger.master.link.up), what="offline")
        went = int(time.time() * 1000)
        fleet.call(lambda: charger.ev.plug_in(target_wh=50_000))
        wait_for(lambda: fleet.call(lambda: charger.master.charger.in_session), what="session")
        fleet.call(lambda: charger.ev.unplug())
        wait_for(lambda: fleet.call(lambda: charger.master.charger.session is None), what="end")
        assert fleet.call(lambda: (charger.master.charger.sessions, charger.master.link.up)) == (
            1,
            False,
        )
        back = int(time.time() * 1000)
        fleet.call(lambda: transport.set_network(True))

        seen: list[contract.Event] = []

        def keep(messages: list[Message]) -> None:
            for message in messages:
                event = contract.decode_event(message.payload, None)
                if event.type in ("charging.started", "charging.stopped"):
                    seen.append(event)

        def both_arrived() -> bool:
            while not cloud.messages.empty():
                keep([cloud.messages.get()])
            return len(seen) >= 2

        # The link's back-off decides when it returns: uniform(0, 2^n s) after n failed
        # attempts, never more than 300 s, so wait past that.
        wait_for(both_arrived, timeout=330, what="the session's events after reconnecting")
        wait_for(lambda: fleet.call(lambda: charger.master.stats()["outbox"]) == 0, timeout=60)
        keep(cloud.drain())  # anything more that was on its way
        assert [(e.type, e.data["session"]) for e in seen] == [
            ("charging.started", "1"),
            ("charging.stopped", "1"),
        ]
        assert all(went <= e.ts <= back for e in seen)
        assert seen[0].seq < seen[1].seq and seen[1].data["reason"] == "ev_disconnected"
