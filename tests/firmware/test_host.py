"""Whole chargers on the host: the real master and slave applications on simulated hardware.

What the cloud receives is checked the way the cloud checks it: every payload decoded with the
contract codec, every telemetry value judged by the ingest's schema rules (cloud/ingest).
"""

from __future__ import annotations

import hashlib

import pytest

import parameters
from cloud.ingest.schema_check import TelemetryRules
from firmware.core import contract, i2cproto, ota
from firmware.host import MemoryBroker, MemoryDownloader, SimCharger, SimClock, make_image

from .conftest import BUILD, DEVICE

RULES = TelemetryRules(parameters.load_compiled(BUILD / "ac22-3p.json"))
METER, RELAY = 0x20, 0x21


def telemetry(broker: MemoryBroker, node: str | None = None) -> list[contract.Telemetry]:
    """Every sample the device published, decoded, checked against the schema."""
    samples = []
    for message in broker.messages(contract.topic(DEVICE, contract.TELEMETRY)):
        sample = contract.decode_telemetry(message.payload, None)
        _, flags = RULES.check(sample.node, sample.values)
        assert not flags, (sample, flags)
        if node is None or sample.node == node:
            samples.append(sample)
    return samples


def events(broker: MemoryBroker, kind: str | None = None) -> list[contract.Event]:
    decoded = [
        contract.decode_event(m.payload, None)
        for m in broker.messages(contract.topic(DEVICE, contract.EVENTS))
    ]
    return [e for e in decoded if kind is None or e.type == kind]


def ota_states(broker: MemoryBroker) -> list[tuple[str, str, int | None, str | None]]:
    return [
        (s.version, s.state, s.progress, s.reason)
        for s in (
            contract.decode_ota_status(m.payload)
            for m in broker.messages(contract.topic(DEVICE, contract.OTA_STATUS))
        )
    ]


def statuses(broker: MemoryBroker) -> list[contract.Status]:
    return [
        contract.decode_status(m.payload, None)
        for m in broker.messages(contract.topic(DEVICE, contract.STATUS))
    ]


def command(broker: MemoryBroker, cid: str, name: str, args: dict) -> None:
    broker.publish(contract.topic(DEVICE, contract.CMD), contract.encode_command(cid, name, args))


def result(broker: MemoryBroker, cid: str) -> contract.CommandResult:
    for message in reversed(broker.messages(contract.topic(DEVICE, contract.CMD_RESULT))):
        decoded = contract.decode_command_result(message.payload)
        if decoded.id == cid:
            return decoded
    raise AssertionError(f"no result for {cid}")


def test_master_and_two_slaves_survive_noise_and_a_silent_slave(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    """The acceptance scenario of the firmware issue."""
    master = charger.master
    assert {s.node: s.address for s in master.client.slaves.values()} == {
        "meter": METER,
        "relay": RELAY,
    }
    charger.run_for(30_000)
    assert telemetry(broker, "meter") and telemetry(broker, "relay")

    # Noise: one corrupted response. The CRC catches it, the retry gets the data.
    noisy_from = charger.clock.now_ms()
    charger.bus.corrupt_next(1, METER)
    charger.run_for(10_000)
    assert master.client.slaves[METER].errors == {"crc_error": 1}
    assert charger.bus.corrupted == 1
    assert [s for s in telemetry(broker, "meter") if s.ts > noisy_from]
    assert not events(broker, "node.offline")

    # The relay stops answering: reported once, the master keeps running.
    charger.bus.silence(RELAY)
    charger.run_for(20_000)
    offline = events(broker, "node.offline")
    assert len(offline) == 1
    assert (offline[0].node, offline[0].severity, offline[0].data) == (
        "relay",
        "error",
        {"address": RELAY, "error": "no_answer"},
    )
    assert [e.data["reason"] for e in events(broker, "charging.fault")] == ["relay_offline"]
    silent_since = offline[0].ts
    assert not [s for s in telemetry(broker, "relay") if s.ts > silent_since]
    assert [s for s in telemetry(broker, "meter") if s.ts > silent_since]  # still sampling
    assert master.link.up and statuses(broker)[-1].state == "online"
    # Probes, not a retry storm: one attempt every five seconds while it is offline.
    attempts = master.client.slaves[RELAY].errors["no_answer"]
    charger.run_for(20_000)
    assert master.client.slaves[RELAY].errors["no_answer"] - attempts == 4

    # It answers again: reported, and its values come back.
    charger.bus.restore(RELAY)
    back_at = charger.clock.now_ms()
    charger.run_for(15_000)
    online = events(broker, "node.online")
    assert [(e.node, e.severity) for e in online] == [("relay", "info")]
    assert [e.type for e in events(broker) if e.type.startswith("charging.fault")] == [
        "charging.fault",
        "charging.fault_cleared",
    ]
    assert [s for s in telemetry(broker, "relay") if s.ts > back_at]
    assert len(events(broker, "node.offline")) == 1


def test_charging_session_end_to_end(charger: SimCharger, broker: MemoryBroker) -> None:
    charger.run_for(20_000)
    charger.ev.plug_in(
        target_wh=3000, max_current_a=32, phases=3, cable_a=32, unplug_after_ms=60_000
    )
    charger.run_for(5_000)
    master = charger.master
    assert master.charger.state == "C"
    assert charger.plant.contactor  # the relay slave closed it on the master's command
    assert charger.plant.duty == 26.67  # min(cable 32, max_current_a default 16, no load limit)
    relay_states = [s.values for s in telemetry(broker, "relay") if "cp_state" in s.values]
    assert [v["cp_state"] for v in relay_states][-3:] == ["A", "B", "C"]
    assert any(s.values.get("contactor_closed") is True for s in telemetry(broker, "relay"))
    started = events(broker, "charging.started")
    assert len(started) == 1

    charger.run_for(120_000)
    energies = [
        s.values["energy_wh"] for s in telemetry(broker, "meter") if "energy_wh" in s.values
    ]
    assert energies == sorted(energies) and energies[-1] > energies[0] + 300
    charging_now = telemetry(broker, "meter")[-1].values
    assert charging_now["current_l1_a"] == 16.0 and charging_now["power_w"] > 10_000
    session = [s.values for s in telemetry(broker, "master") if "session_energy_wh" in s.values]
    assert session[-1]["session_energy_wh"] > session[0]["session_energy_wh"]
    assert session[-1]["session_s"] >= 120

    # Full at 3 kWh: the EV stops asking (B), the contactor opens, it unplugs a minute later.
    charger.run_for(1_200_000)
    assert charger.ev.received_wh == pytest.approx(3000, abs=0.01)
    assert not charger.plant.contactor and master.charger.state == "A"
    stopped = events(broker, "charging.stopped")
    assert len(stopped) == 1
    assert stopped[0].data["reason"] == "ev_disconnected"
    assert stopped[0].data["energy_wh"] == pytest.approx(3000, abs=1.0)
    transitions = [(e.data["from"], e.data["to"]) for e in events(broker, "charging.state")]
    assert transitions == [("A", "B"), ("B", "C"), ("C", "B"), ("B", "A")]
    # Samples are per node, one node per message, never two of one node with the same ts.
    seen = [(s.node, s.ts) for s in telemetry(broker)]
    assert len(seen) == len(set(seen))
    seqs = [s.seq for s in telemetry(broker)]
    assert seqs == list(range(len(seqs)))


def test_rfid_required_waits_for_charging_start(charger: SimCharger, broker: MemoryBroker) -> None:
    desired = contract.encode_config(1, {"rfid_required": True, "max_current_a": 32})
    broker.publish(contract.topic(DEVICE, contract.CONFIG_DESIRED), desired, retain=True)
    command(broker, "apply-1", "config.apply", {"version": 1})
    charger.run_for(2_000)
    assert result(broker, "apply-1").status == "ok"
    reported = contract.decode_config(broker.retained[contract.topic(DEVICE, "config/reported")])
    assert reported.version == 1 and reported.values["rfid_required"] is True
    charger.ev.plug_in(target_wh=1000)
    charger.run_for(20_000)
    assert charger.master.charger.state == "B" and not charger.plant.contactor
    command(broker, "start-1", "charging.start", {"connector": 1})
    charger.run_for(3_000)
    assert result(broker, "start-1").status == "ok"
    assert charger.plant.contactor and charger.plant.duty == 53.33  # 32 A now
    command(broker, "stop-1", "charging.stop", {"connector": 1})
    charger.run_for(5_000)
    assert result(broker, "stop-1").status == "ok"
    assert not charger.plant.contactor
    assert events(broker, "charging.stopped")[-1].data["reason"] == "remote"
    charger.ev.unplug()
    charger.run_for(2_000)
    command(broker, "start-2", "charging.start", {"connector": 1})
    charger.run_for(1_000)
    assert (result(broker, "start-2").status, result(broker, "start-2").reason) == (
        "rejected",
        "no EV connected",
    )


def test_unlock_command_reaches_the_relay_register(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    command(broker, "u1", "connector.unlock", {})
    charger.run_for(1_000)
    assert result(broker, "u1").status == "ok" and charger.plant.unlocks == 1


def test_settings_survive_a_reboot(charger: SimCharger, broker: MemoryBroker) -> None:
    desired = contract.encode_config(5, {"max_current_a": 10})
    broker.publish(contract.topic(DEVICE, contract.CONFIG_DESIRED), desired, retain=True)
    charger.run_for(1_000)
    command(broker, "r1", "reboot", {})
    charger.run_for(1_000)
    assert charger.reboots == 1 and result(broker, "r1").status == "ok"
    offline = [s for s in statuses(broker) if s.state == "offline"]
    assert offline and offline[-1].ts is not None  # said goodbye, not the will
    charger.run_for(20_000)
    assert (
        charger.master.settings.version == 5 and charger.master.settings.get("max_current_a") == 10
    )
    assert statuses(broker)[-1].state == "online"
    charger.ev.plug_in(target_wh=500)
    charger.run_for(5_000)
    assert charger.plant.duty == 16.67  # 10 A


def test_broker_outage_buffers_and_replays_in_order(
    charger: SimCharger, broker: MemoryBroker
) -> None:
    charger.ev.plug_in(target_wh=50_000)
    charger.run_for(30_000)
    broker.outage()
    charger.run_for(120_000)
    assert len(charger.master.link.outbox) > 10
    assert charger.plant.contactor  # charging does not need the cloud
    broker.restore()
    charger.run_for(400_000)  # back-off, then the paced replay
    assert len(charger.master.link.outbox) == 0
    seqs = [s.seq for s in telemetry(broker)]
    assert seqs == list(range(len(seqs)))  # nothing lost, nothing reordered
    assert statuses(broker)[-1].state == "online"


# --- OTA ------------------------------------------------------------------------------------


def offer_image(
    broker: MemoryBroker, downloader: MemoryDownloader, version: str, image: bytes
) -> None:
    url = f"https://fw.example/{version}.bin"
    downloader.publish(url, image)
    payload = contract.encode_ota(version, url, hashlib.sha256(image).hexdigest(), len(image))
    broker.publish(contract.topic(DEVICE, contract.OTA), payload, retain=True)


@pytest.fixture
def downloader() -> MemoryDownloader:
    return MemoryDownloader()


@pytest.fixture
def updatable(clock: SimClock, broker: MemoryBroker, downloader: MemoryDownloader) -> SimCharger:
    sim = SimCharger(DEVICE, clock, broker=broker, seed=3, downloader=downloader)
    sim.run_for(15_000)
    return sim


def test_ota_update_installs_reboots_and_confirms(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0", size=100_000))
    updatable.run_for(30_000)
    assert updatable.reboots == 1 and updatable.master.fw == "1.1.0"
    states = [s[1] for s in ota_states(broker)]
    assert states[0] == "downloading"
    # "confirmed" by the new image once it reached the cloud, and again (contract 4.7 rule 1)
    # when the retained offer names the version it now runs.
    assert states[-4:] == ["verifying", "installed", "confirmed", "confirmed"]
    progress = [s[2] for s in ota_states(broker) if s[1] == "downloading"]
    assert progress == sorted(progress) and progress[-1] == 100 and len(progress) <= 11
    assert statuses(broker)[-1].fw == "1.1.0"
    assert not updatable.storage.pending_verify and updatable.storage.get("ota") is None
    updatable.run_for(60_000)  # the retained offer again, now the running version
    assert updatable.reboots == 1


def test_ota_waits_for_the_charging_session_to_end(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    updatable.ev.plug_in(target_wh=20_000, unplug_after_ms=0)
    updatable.run_for(10_000)
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0"))
    updatable.run_for(60_000)
    assert updatable.reboots == 0 and updatable.plant.contactor
    assert ota_states(broker)[-1][1] == "installed"
    updatable.ev.unplug()
    updatable.run_for(20_000)
    assert updatable.reboots == 1 and updatable.master.fw == "1.1.0"


def test_ota_digest_mismatch_fails_and_stays(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    image = make_image("1.1.0")
    downloader.publish("https://fw.example/bad.bin", image)
    payload = contract.encode_ota("1.1.0", "https://fw.example/bad.bin", "0" * 64, len(image))
    broker.publish(contract.topic(DEVICE, contract.OTA), payload, retain=True)
    updatable.run_for(10_000)
    assert ota_states(broker)[-1] == ("1.1.0", "failed", None, "digest_mismatch")
    assert updatable.reboots == 0 and updatable.master.ota.state == ota.IDLE


def test_ota_broken_download(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    downloader.fail_after["https://fw.example/1.1.0.bin"] = 5000
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0", size=20_000))
    updatable.run_for(10_000)
    assert ota_states(broker)[-1] == ("1.1.0", "failed", None, "download_failed")
    assert downloader.opened == 1
    updatable.run_for(60_000)
    assert downloader.opened == 1  # the same offer is not retried


def test_ota_flash_failure(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    updatable.storage.flash_broken = True
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0"))
    updatable.run_for(10_000)
    assert ota_states(broker)[-1] == ("1.1.0", "failed", None, "write_failed")
    assert updatable.reboots == 0


def test_a_crashing_image_is_rolled_back_by_the_bootloader(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0", behaviour="crash"))
    updatable.run_for(30_000)
    assert updatable.master.fw == "1.0.0"
    assert ota_states(broker)[-1] == ("1.1.0", "rolled_back", None, "boot_failed")
    assert statuses(broker)[-1].fw == "1.0.0"


def test_an_image_that_cannot_reach_the_cloud_rolls_itself_back(
    updatable: SimCharger, broker: MemoryBroker, downloader: MemoryDownloader
) -> None:
    offer_image(broker, downloader, "1.1.0", make_image("1.1.0", behaviour="offline"))
    updatable.run_for(30_000)
    assert updatable.master.fw == "1.1.0" and not updatable.master.link.up
    updatable.run_for(ota.CONFIRM_MS)
    assert updatable.master.fw == "1.0.0"
    updatable.run_for(30_000)
    assert ota_states(broker)[-1] == ("1.1.0", "rolled_back", None, "not_confirmed")
    assert updatable.reboots == 2


def test_fleet_shares_one_clock(clock: SimClock, broker: MemoryBroker) -> None:
    fleet = [SimCharger(f"CHG-{n:04d}", clock, broker=broker, seed=n) for n in range(20)]
    for _ in range(40):
        clock.advance(500)
        for charger in fleet:
            charger.step()
    assert all(charger.master.link.up for charger in fleet)
    online = {m.topic.split("/")[1] for m in broker.messages("af/+/status")}
    assert len(online) == 20
    # Power-on jitter: the fleet did not connect in the same instant.
    first = sorted(m.payload for m in broker.messages("af/+/status"))
    assert len(set(first)) > 10


def test_slave_answers_are_the_registers_of_the_schema(charger: SimCharger) -> None:
    meter = charger.slaves["meter"]
    charger.ev.plug_in(target_wh=1000)
    charger.run_for(5_000)
    block = charger.master.client.read(METER, 0, 24, charger.clock.now_ms())
    family = charger.family
    assert family.params["voltage_l2_v"].decode(block, 16) == 229.8
    assert meter.get("frequency_hz") == 50.0
    with pytest.raises(i2cproto.NackError):
        charger.master.client.write(METER, 20, b"\x00\x00", charger.clock.now_ms())
