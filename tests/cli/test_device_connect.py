"""`ampfleet device connect ID`: the device's behaviour without I/O (``DeviceSession``), and the
command itself as a process against real brokers (the embedded amqtt and Mosquitto), seen by
the cloud's service account."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.cli.device import DeviceSession, Outgoing
from firmware.core import contract, topics
from parameters.catalogue import family_of
from tests.cli.test_up import AMPFLEET
from tests.link import Link
from tests.mqtt import Message, Mqtt

NOW = 1_790_000_000_000


def _session(family: str = "ac22-3p") -> DeviceSession:
    return DeviceSession(family_of(family), "1.2.3", NOW)


def _answer(out: list[Outgoing]) -> contract.CommandResult:
    assert [o.channel for o in out] == [topics.CMD_RESULT]
    return contract.decode_command_result(out[0].payload)


def test_it_announces_itself_online_with_its_firmware_and_schema() -> None:
    status, reported = _session().on_connected(NOW)
    assert status.channel == topics.STATUS and status.retain
    decoded = contract.decode_status(status.payload, NOW)
    assert (decoded.state, decoded.fw, decoded.schema) == ("online", "1.2.3", "ac22-3p.3")
    assert reported.channel == topics.CONFIG_REPORTED and reported.retain
    offline = contract.decode_status(_session().going_offline(NOW).payload, NOW)
    assert offline.state == "offline" and offline.ts == NOW


@pytest.mark.parametrize("family", ["ac22-3p", "wallbox-7kw"])
def test_every_sample_passes_the_familys_schema(family: str) -> None:
    session, schema = _session(family), family_of(family)
    measured = {p.id for p in schema.parameters if p.kind == "telemetry"}
    seen: set[str] = set()
    seqs = []
    for second in range(0, 600, 7):
        now_ms = NOW + second * 1000
        for message in session.sample(now_ms):
            sample = contract.decode_telemetry(message.payload, now_ms)
            seqs.append(sample.seq)
            for name, value in sample.values.items():
                parameter = schema.parameter(name)
                assert parameter.node == sample.node, name
                assert parameter.value is not None
                assert parameter.value.reason_to_refuse(value) is None, (name, value)
                seen.add(name)
    assert measured <= seen
    assert seqs == list(range(len(seqs)))  # +1 per telemetry message (contract 7)


def test_the_energy_meter_only_counts_up() -> None:
    session = _session()
    readings = []
    for second in range(0, 100, 10):
        now_ms = NOW + second * 1000
        for message in session.sample(now_ms):
            sample = contract.decode_telemetry(message.payload, now_ms)
            if sample.node == "meter":
                readings.append(sample.values["energy_wh"])
                assert 200 < float(sample.values["voltage_l1_v"]) < 260
    assert readings == sorted(readings) and readings[-1] > readings[0]


def test_commands_are_answered_per_the_contract() -> None:
    session = _session()

    def send(
        name: str, args: dict[str, object], command_id: str, expires: int | None = None
    ) -> contract.CommandResult:
        payload = contract.encode_command(command_id, name, args, expires)
        return _answer(session.receive(topics.CMD, payload, NOW))

    assert send("charging.start", {"connector": 1}, "c1").status == "ok"
    unknown = send("self.destruct", {}, "c2")
    assert (unknown.status, unknown.reason) == ("rejected", "unknown_command")
    expired = send("reboot", {}, "c3", expires=NOW - 1)
    assert (expired.status, expired.reason) == ("rejected", "expired")
    bad = send("charging.start", {"connector": "one"}, "c4")
    assert (bad.status, bad.reason) == ("rejected", "bad_args")
    assert send("charging.start", {"plug": 1}, "c5").reason == "bad_args"
    # A redelivered id (QoS 1) is not run again: its stored result is published again.
    again = contract.encode_command("c3", "reboot", {})
    assert session.receive(topics.CMD, again, NOW + 10_000) == [
        Outgoing(
            topics.CMD_RESULT, contract.encode_command_result("c3", "rejected", reason="expired")
        )
    ]
    assert session.receive(topics.CMD, b"not json", NOW) == []


def test_desired_configuration_is_applied_reported_and_confirmed() -> None:
    session = _session()
    desired = contract.encode_config(7, {"max_current_a": 16, "led_brightness_pct": 400})
    out = session.receive(topics.CONFIG_DESIRED, desired, NOW)
    event = contract.decode_event(out[0].payload, NOW)
    assert event.type == "config.rejected" and "led_brightness_pct" in event.data["params"]
    reported = contract.decode_config(out[1].payload)
    assert (reported.version, reported.values) == (7, {"max_current_a": 16})
    apply = contract.encode_command("cfg-7", "config.apply", {"version": 7})
    answer = _answer(session.receive(topics.CMD, apply, NOW))
    assert answer.status == "rejected" and "led_brightness_pct" in (answer.reason or "")
    # A retained replay of the applied version is a no-op (contract 4.4).
    assert session.receive(topics.CONFIG_DESIRED, desired, NOW) == []
    fine = contract.encode_config(8, {"max_current_a": 10})
    session.receive(topics.CONFIG_DESIRED, fine, NOW)
    apply = contract.encode_command("cfg-8", "config.apply", {"version": 8})
    assert _answer(session.receive(topics.CMD, apply, NOW)).status == "ok"
    # A resumed session may deliver the command before the retained set: answered on arrival.
    early = contract.encode_command("cfg-9", "config.apply", {"version": 9})
    assert session.receive(topics.CMD, early, NOW) == []
    out = session.receive(topics.CONFIG_DESIRED, contract.encode_config(9, {"phases": 3}), NOW)
    assert [o.channel for o in out] == [topics.CONFIG_REPORTED, topics.CMD_RESULT]
    answer = contract.decode_command_result(out[1].payload)
    assert (answer.id, answer.status) == ("cfg-9", "ok")
    # An empty retained payload clears the topic; it is not a message.
    assert session.receive(topics.CONFIG_DESIRED, b"", NOW) == []


# --- the command, as a process, against real brokers -------------------------------------------


@pytest.fixture
def device(link: Link, tmp_path: Path) -> Iterator[tuple[str, str, Mqtt]]:
    """A device with credentials, and the cloud's service account watching its topics."""
    device_id, password = link.device(hardware_family="ac22-3p")
    with link.service() as watcher:
        assert not watcher.subscribe(f"af/{device_id}/#").is_failure
        yield device_id, password, watcher


def _connect(link: Link, device_id: str, password: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AMPFLEET_DEVICE_PASSWORD": password}
    url = f"mqtt://{link.host}:{link.port}"
    return subprocess.Popen(
        [AMPFLEET, "device", "connect", device_id, "--broker-url", url, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _now() -> int:
    return int(time.time() * 1000)


def _until(watcher: Mqtt, wanted: str, timeout: float = 20) -> list[Message]:
    """Messages until one on a topic ending with ``wanted`` arrives (that one last)."""
    seen: list[Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(message)
        if message.topic.endswith(wanted):
            return seen
    raise AssertionError(f"no {wanted} within {timeout} s: {seen}")


def test_it_connects_reports_answers_and_stops_cleanly_on_ctrl_c(
    link: Link, device: tuple[str, str, Mqtt]
) -> None:
    device_id, password, watcher = device
    process = _connect(link, device_id, password, "--interval", "0.5", "--firmware", "1.0.7")
    try:
        status = contract.decode_status(_until(watcher, "/status")[-1].payload, _now())
        assert (status.state, status.fw, status.schema) == ("online", "1.0.7", "ac22-3p.3")
        _until(watcher, "/telemetry")
        command = contract.encode_command("try-1", "reboot", {})
        watcher.publish(topics.device_topic(device_id, topics.CMD), command)
        result = contract.decode_command_result(_until(watcher, "/cmd/result")[-1].payload)
        assert (result.id, result.status) == ("try-1", "ok")
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    # It printed what it received, and said goodbye itself rather than through its will.
    assert f"<- af/{device_id}/cmd " + command.decode() in stdout
    offline = contract.decode_status(_until(watcher, "/status")[-1].payload, _now())
    assert offline.state == "offline" and offline.ts is not None
    assert "Traceback" not in stderr


def test_it_stops_after_its_duration_and_refused_credentials_fail(
    link: Link, device: tuple[str, str, Mqtt], tmp_path: Path
) -> None:
    device_id, password, _watcher = device
    saved = tmp_path / "credentials.json"
    saved.write_text(json.dumps({"password": password}))
    started = _connect(link, device_id, "", "--credentials", str(saved), "--duration", "2")
    stdout, stderr = started.communicate(timeout=30)
    assert started.returncode == 0, stderr
    assert f"-> af/{device_id}/status" in stdout
    refused = _connect(link, device_id, "wrong-password", "--duration", "5")
    _, stderr = refused.communicate(timeout=30)
    assert refused.returncode == 1 and "refused" in stderr


def test_a_device_that_dies_is_declared_offline_by_its_will(
    link: Link, device: tuple[str, str, Mqtt]
) -> None:
    device_id, password, watcher = device
    process = _connect(link, device_id, password, "--interval", "0.5")
    try:
        _until(watcher, "/telemetry")
    finally:
        process.kill()  # no DISCONNECT: the broker publishes the will (MQTT-3.1.2-8)
        process.communicate(timeout=20)
    assert _until(watcher, "/status")[-1].payload == contract.LAST_WILL
