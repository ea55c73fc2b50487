"""The master's cloud link (firmware/core/link.py) over the in-memory MQTT broker.

The broker keeps retained messages, persistent sessions and wills as MQTT does, so what the
link publishes, in which order, retained or not, is what a real broker would hold.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from firmware.core import contract, link, params
from firmware.core.backoff import Backoff
from firmware.core.outbox import Outbox
from firmware.host import MemoryBroker, MemoryTransport, Message

DEVICE = "CHG-0001"
T0 = 1_790_000_000_000


class Handler:
    """The application side of the link, recording what it was asked to do."""

    def __init__(self) -> None:
        self.configs: list[tuple[list[str], bool]] = []
        self.commands: list[contract.Command] = []
        self.offers: list[Any] = []
        self.answer: tuple[str, Any, Any] = ("ok", None, None)

    def on_config(self, changed: list[str], reboot: bool, now_ms: int) -> None:
        self.configs.append((changed, reboot))

    def run_command(self, command: contract.Command, now_ms: int) -> tuple[str, Any, Any]:
        self.commands.append(command)
        if command.name == "reboot" and self.answer == ("boom", None, None):
            raise RuntimeError("handler bug")
        return self.answer

    def on_ota(self, offer: Any, now_ms: int) -> None:
        self.offers.append(offer)


class Rig:
    def __init__(self, family: params.Family, broker: MemoryBroker, **options: Any) -> None:
        self.broker = broker
        self.transport = MemoryTransport(broker)
        self.handler = Handler()
        self.settings = params.Settings(family)
        self.link = link.Link(
            DEVICE,
            "1.0.0",
            family.schema,
            self.transport,
            self.settings,
            self.handler,
            lambda: 0.5,
            **options,
        )
        self.link.clock_set = True
        self.transport.attach(self.link)
        self.now = T0

    def tick(self, ms: int = 0) -> None:
        self.now += ms
        self.transport.poll()
        self.link.tick(self.now)

    def connect(self) -> None:
        for _ in range(40):
            self.tick(500)
            if self.link.up:
                self.tick(0)  # hand over what the subscriptions brought
                return
        raise AssertionError("never connected")

    def cloud(self, channel: str, payload: bytes, retain: bool = False) -> None:
        self.broker.publish(contract.topic(DEVICE, channel), payload, 1, retain)
        self.tick(0)

    def sent(self, channel: str) -> list[Message]:
        return self.broker.messages(contract.topic(DEVICE, channel))

    def events(self) -> list[contract.Event]:
        return [contract.decode_event(m.payload, None) for m in self.sent(contract.EVENTS)]

    def results(self) -> list[contract.CommandResult]:
        return [contract.decode_command_result(m.payload) for m in self.sent(contract.CMD_RESULT)]


@pytest.fixture
def rig(family: params.Family, broker: MemoryBroker) -> Rig:
    return Rig(family, broker)


def test_connect_sequence_follows_the_contract(rig: Rig, broker: MemoryBroker) -> None:
    rig.link.send_telemetry(T0, "meter", {"energy_wh": 1.0})  # before the first connection
    rig.tick(0)
    assert not rig.link.up  # the power-on wait: uniform(0, 10 s) with rand 0.5 is 5 s
    rig.connect()
    order = [(m.topic.split("/", 2)[2], m.retain) for m in broker.log]
    assert order == [
        ("status", True),
        ("config/reported", True),
        ("telemetry", False),
    ]
    status = contract.decode_status(broker.log[0].payload, rig.now)
    assert (status.state, status.fw, status.schema) == ("online", "1.0.0", "ac22-3p.3")
    assert status.ts is not None
    subscriptions = broker.sessions[DEVICE].subscriptions
    assert subscriptions == {
        f"af/{DEVICE}/config/desired": 1,
        f"af/{DEVICE}/cmd": 1,
        f"af/{DEVICE}/ota": 1,
        f"af/{DEVICE}/auth/list": 1,
        f"af/{DEVICE}/cert": 1,
    }
    reported = contract.decode_config(broker.log[1].payload)
    assert reported == contract.Config(0, rig.settings.in_force())
    assert rig.link.will() == (f"af/{DEVICE}/status", contract.LAST_WILL, 1, True)


def test_losing_the_connection_publishes_the_will_and_buffers(
    rig: Rig, broker: MemoryBroker
) -> None:
    rig.connect()
    broker.drop(DEVICE)
    assert broker.retained[f"af/{DEVICE}/status"] == contract.LAST_WILL
    rig.tick(0)
    assert rig.link.state == link.DOWN
    for seq in range(25):
        rig.link.send_telemetry(rig.now + seq, "meter", {"power_w": float(seq)})
    assert len(rig.link.outbox) == 25 and not rig.sent(contract.TELEMETRY)
    rig.connect()
    # Replay is paced: at most ten per second, oldest first, original seq kept.
    assert len(rig.sent(contract.TELEMETRY)) <= 11
    for _ in range(4):
        rig.tick(1000)
    seqs = [contract.decode_telemetry(m.payload, None).seq for m in rig.sent(contract.TELEMETRY)]
    assert seqs == list(range(25))
    assert json.loads(broker.retained[f"af/{DEVICE}/status"])["state"] == "online"


def test_live_messages_wait_behind_the_replay(rig: Rig, broker: MemoryBroker) -> None:
    broker.outage()
    for seq in range(15):
        rig.link.send_telemetry(T0 + seq, "meter", {"power_w": 1.0})
    broker.restore()
    rig.connect()
    rig.link.send_telemetry(T0 + 99, "meter", {"power_w": 2.0})  # while the replay runs
    for _ in range(3):
        rig.tick(1000)
    seqs = [contract.decode_telemetry(m.payload, None).seq for m in rig.sent(contract.TELEMETRY)]
    assert seqs == list(range(16))


def test_overflow_is_reported_after_reconnecting(
    family: params.Family, broker: MemoryBroker
) -> None:
    rig = Rig(family, broker, outbox=Outbox(capacity=5))
    for seq in range(8):
        rig.link.send_event(T0 + seq, "test.event", "info")
    rig.connect()
    for _ in range(2):
        rig.tick(1000)
    overflow = [e for e in rig.events() if e.type == "buffer.overflow"]
    assert [e.data for e in overflow] == [{"dropped": 3}]
    assert [e.seq for e in rig.events() if e.type == "test.event"] == [3, 4, 5, 6, 7]


def _session_events(number: int) -> dict[str, Any]:
    return {"session": f"S{number}", "connector": 1}


def test_a_long_outage_keeps_every_session_event(
    family: params.Family, broker: MemoryBroker
) -> None:
    """Telemetry floods the buffer for hours; the sessions of that time all reach the cloud."""
    rig = Rig(family, broker, outbox=Outbox(capacity=20))
    rig.connect()
    broker.outage()
    rig.tick(0)
    for session in range(10):
        rig.link.send_event(rig.now, "charging.started", "info", _session_events(session))
        for _ in range(60):  # a sample a minute for an hour
            rig.now += 60_000
            rig.link.send_telemetry(rig.now, "meter", {"power_w": 7000.0})
        rig.link.send_event(rig.now, "charging.stopped", "info", _session_events(session))
    broker.restore()
    rig.connect()
    for _ in range(10):
        rig.tick(1000)
    assert not len(rig.link.outbox)
    started = [e.data["session"] for e in rig.events() if e.type == "charging.started"]
    stopped = [e.data["session"] for e in rig.events() if e.type == "charging.stopped"]
    assert started == stopped == [f"S{n}" for n in range(10)]
    # The telemetry ring overflowed (580 samples dropped) and says so; no session was lost.
    assert [e.data for e in rig.events() if e.type == "buffer.overflow"] == [{"dropped": 580}]
    assert not [e for e in rig.events() if e.type == contract.SESSIONS_LOST]
    assert len(rig.sent(contract.TELEMETRY)) == 20


def test_losing_session_events_is_counted_and_alarmed(
    family: params.Family, broker: MemoryBroker
) -> None:
    """When the session ring itself overflows, the loss is counted and reported as an error."""
    rig = Rig(family, broker, outbox=Outbox(capacity=20, session_capacity=4))
    rig.connect()
    broker.outage()
    rig.tick(0)
    for session in range(6):
        rig.link.send_event(rig.now, "charging.started", "info", _session_events(session))
        rig.link.send_telemetry(rig.now, "meter", {"power_w": 7000.0})
        rig.link.send_event(rig.now, "charging.stopped", "info", _session_events(session))
    assert rig.link.outbox.session_dropped == 8
    broker.restore()
    rig.connect()
    for _ in range(3):
        rig.tick(1000)
    lost = [e for e in rig.events() if e.type == contract.SESSIONS_LOST]
    assert [(e.severity, e.data) for e in lost] == [("error", {"dropped": 8})]
    assert rig.link.outbox.session_dropped == 0
    kept = [(e.type, e.data["session"]) for e in rig.events() if e.type.startswith("charging.s")]
    assert kept == [
        ("charging.started", "S4"),
        ("charging.stopped", "S4"),
        ("charging.started", "S5"),
        ("charging.stopped", "S5"),
    ]
    assert not [e for e in rig.events() if e.type == "buffer.overflow"]


def test_backoff_after_a_drop_and_refused_credentials(
    family: params.Family, broker: MemoryBroker
) -> None:
    rig = Rig(family, broker, backoff=Backoff(lambda: 0.999))
    rig.connect()
    broker.outage()
    rig.tick(0)
    down_at = rig.now
    assert rig.link.next_attempt_ms == down_at + 999  # attempt 0: up to 1 s
    rig.tick(1000)
    assert rig.link.next_attempt_ms == rig.now + 1998  # failed again: up to 2 s
    broker.restore()
    broker.refused.add(DEVICE)
    rig.tick(2000)
    assert rig.link.next_attempt_ms - rig.now >= 300_000  # credentials: wait 5 minutes


def test_connect_that_never_answers_times_out(rig: Rig) -> None:
    class Silent:
        def connect(self, *args: Any) -> None:
            pass  # no CONNACK, ever

    rig.link.transport = Silent()
    rig.tick(0)
    rig.tick(6000)
    assert rig.link.state == link.CONNECTING
    rig.tick(link.CONNECT_TIMEOUT_MS)
    assert rig.link.state == link.DOWN


def test_desired_config_is_applied_reported_and_refusals_reported(rig: Rig) -> None:
    rig.connect()
    desired = {"max_current_a": 20, "phases": 2, "turbo": True}
    rig.cloud(contract.CONFIG_DESIRED, contract.encode_config(3, desired), retain=True)
    assert rig.handler.configs == [(["max_current_a"], False)]
    reported = contract.decode_config(rig.sent(contract.CONFIG_REPORTED)[-1].payload)
    assert reported.version == 3
    assert reported.values["max_current_a"] == 20 and reported.values["phases"] == 3
    rejected = [e for e in rig.events() if e.type == "config.rejected"]
    assert rejected[0].data == {
        "version": 3,
        "params": {
            "phases": "not a multiple of the step 2",
            "turbo": "no parameter 'turbo' in family ac22-3p",
        },
    }
    assert rejected[0].severity == "warning"
    # The retained document comes again at the next connection: same version, nothing to do.
    rig.cloud(contract.CONFIG_DESIRED, contract.encode_config(3, desired), retain=True)
    assert len(rig.handler.configs) == 1


def test_config_apply_answers_for_the_version_it_names(rig: Rig) -> None:
    rig.connect()
    rig.cloud(contract.CMD, contract.encode_command("c1", "config.apply", {"version": 1}))
    assert rig.results()[-1] == contract.CommandResult("c1", "accepted", {}, None)
    rig.cloud(contract.CONFIG_DESIRED, contract.encode_config(1, {"max_current_a": 25}), True)
    assert rig.results()[-1] == contract.CommandResult("c1", "ok", {"version": 1}, None)
    rig.cloud(contract.CONFIG_DESIRED, contract.encode_config(2, {"max_current_a": 40}), True)
    rig.cloud(contract.CMD, contract.encode_command("c2", "config.apply", {"version": 2}))
    assert rig.results()[-1] == contract.CommandResult(
        "c2", "rejected", {"version": 2}, "max_current_a: above the maximum 32"
    )
    rig.cloud(contract.CMD, contract.encode_command("c0", "config.apply", {"version": 1}))
    assert rig.results()[-1] == contract.CommandResult("c0", "ok", {"version": 2}, None)
    rig.cloud(contract.CMD, contract.encode_command("c3", "config.apply", {"version": "x"}))
    assert rig.results()[-1].reason == "bad_args"


def test_commands_are_checked_run_and_answered(rig: Rig) -> None:
    rig.connect()
    rig.cloud(contract.CMD, contract.encode_command("a1", "charging.start", {"connector": 1}))
    assert [c.name for c in rig.handler.commands] == ["charging.start"]
    rig.cloud(contract.CMD, contract.encode_command("a2", "warp", {}))
    rig.cloud(contract.CMD, contract.encode_command("a3", "charging.start", {}))
    rig.cloud(contract.CMD, contract.encode_command("a4", "reboot", {}, expires=rig.now - 1))
    results = {r.id: r for r in rig.results()}
    assert results["a1"].status == "ok"
    assert (results["a2"].status, results["a2"].reason) == ("rejected", "unknown_command")
    assert (results["a3"].reason, results["a3"].result) == (
        "bad_args",
        {"args": {"connector": "required"}},
    )
    assert (results["a4"].status, results["a4"].reason) == ("rejected", "expired")
    assert len(rig.handler.commands) == 1  # none of the refused ones ran


def test_a_redelivered_command_is_answered_again_not_run_again(rig: Rig) -> None:
    rig.connect()
    payload = contract.encode_command("dup", "charging.stop", {"connector": 1})
    rig.cloud(contract.CMD, payload)
    rig.cloud(contract.CMD, payload)
    assert len(rig.handler.commands) == 1
    assert [r.id for r in rig.results()] == ["dup", "dup"]
    # The memory holds 16 commands: the 17th pushes the first out.
    for n in range(16):
        rig.cloud(contract.CMD, contract.encode_command(f"n{n}", "charging.stop", {"connector": 1}))
    rig.cloud(contract.CMD, payload)
    assert len(rig.handler.commands) == 18


def test_a_long_command_reports_accepted_then_its_result(rig: Rig) -> None:
    rig.connect()
    rig.handler.answer = ("accepted", None, None)
    rig.cloud(contract.CMD, contract.encode_command("long", "reboot", {}))
    rig.link.command_done("long", "error", {"step": 2}, "relay did not answer")
    assert [(r.status, r.reason) for r in rig.results()] == [
        ("accepted", None),
        ("error", "relay did not answer"),
    ]
    rig.cloud(contract.CMD, contract.encode_command("long", "reboot", {}))  # redelivered
    assert rig.results()[-1].status == "error"


def test_bad_downlink_messages_are_counted_and_reported(rig: Rig) -> None:
    rig.connect()
    rig.cloud(contract.CMD, b'{"v":1,"id":"x"}')
    rig.cloud(contract.CONFIG_DESIRED, b"not json", retain=True)
    rig.link.on_message("af/OTHER/cmd", contract.encode_command("o", "reboot", {}))
    rig.link.on_message("af/CHG-0001/telemetry", b"{}")
    rig.handler.answer = ("boom", None, None)
    rig.cloud(contract.CMD, contract.encode_command("b", "reboot", {}))
    assert rig.link.rejected == 4
    kinds = [(e.type, e.data.get("reason")) for e in rig.events()]
    assert kinds[:4] == [
        ("message.rejected", "missing_field"),
        ("message.rejected", "not_json"),
        ("message.rejected", "bad_topic"),
        ("message.rejected", "bad_topic"),
    ]
    assert rig.results()[-1].status == "error" and "handler bug" in (rig.results()[-1].reason or "")
    assert rig.link.errors == 1


def test_ota_offers_and_clearing_go_to_the_handler(rig: Rig) -> None:
    rig.connect()
    offer = contract.encode_ota("1.1.0", "https://fw/x.bin", "ab" * 32, 10)
    rig.cloud(contract.OTA, offer, retain=True)
    rig.cloud(contract.OTA, b"", retain=True)
    assert [o.version if o else None for o in rig.handler.offers] == ["1.1.0", None]
    rig.link.send_ota_status("1.1.0", "downloading", 0)
    assert contract.decode_ota_status(rig.sent(contract.OTA_STATUS)[-1].payload).progress == 0


def test_results_and_ota_statuses_wait_for_the_next_connection(
    rig: Rig, broker: MemoryBroker
) -> None:
    rig.connect()
    broker.drop(DEVICE)
    rig.tick(0)
    rig.link.send_ota_status("1.1.0", "failed", reason="download_failed")
    rig.link.command_done("late", "ok")
    assert not rig.sent(contract.OTA_STATUS)
    rig.connect()
    assert len(rig.sent(contract.OTA_STATUS)) == 1 and rig.results()[-1].id == "late"


def test_nothing_timestamped_before_the_clock_is_set(rig: Rig, broker: MemoryBroker) -> None:
    rig.link.clock_set = False
    assert not rig.link.send_telemetry(T0, "meter", {"power_w": 1.0})
    assert not rig.link.send_event(T0, "boot", "info")
    rig.connect()
    status = contract.decode_status(broker.log[0].payload, None)
    assert status.ts is None and rig.link.unclocked == 2
    assert not rig.sent(contract.TELEMETRY)


def test_close_says_offline_and_disconnects_without_will(rig: Rig, broker: MemoryBroker) -> None:
    rig.connect()
    rig.link.close(rig.now)
    status = contract.decode_status(broker.retained[f"af/{DEVICE}/status"], None)
    assert status.state == "offline" and status.ts == rig.now
    assert not broker.connected(DEVICE)
    rig.tick(600_000)
    assert rig.link.state == link.CLOSED and not broker.connected(DEVICE)


def test_a_bad_device_id_is_refused_early(family: params.Family, broker: MemoryBroker) -> None:
    with pytest.raises(contract.ContractError):
        link.Link("bad/id", "1", "s", MemoryTransport(broker), params.Settings(family), None, None)
