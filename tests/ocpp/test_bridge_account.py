"""The OCPP bridge's broker account, on both brokers: it speaks for chargers (device-to-cloud
channels of any device id) and follows one charger's downlink and status at a time, and
nothing else; the Mosquitto provisioner keeps it like the service account."""

from __future__ import annotations

from broker.acl import Action, allowed
from broker.mosquitto import dynsec
from broker.mosquitto.dynsec import ClientState
from firmware.core import contract
from tests.link import Link
from tests.ocpp.conftest import bridge_endpoint


def test_the_bridge_rules() -> None:
    def may(action: Action, topic: str) -> bool:
        return allowed("ampfleet-ocpp-bridge", action, topic, False, True)

    for channel in ("telemetry", "status", "events", "config/reported", "cmd/result", "ota/status"):
        assert may(Action.PUBLISH, f"af/cp-1/{channel}")
    for channel in ("cmd", "config/desired", "ota"):
        assert not may(Action.PUBLISH, f"af/cp-1/{channel}")
    for channel in ("cmd", "config/desired", "ota", "status"):
        assert may(Action.SUBSCRIBE, f"af/cp-1/{channel}")
        assert may(Action.RECEIVE, f"af/cp-1/{channel}")
    for topic in ("af/+/cmd", "af/#", "#", "af/cp-1/telemetry", "$share/g/af/cp-1/cmd"):
        assert not may(Action.SUBSCRIBE, topic)
    assert not may(Action.PUBLISH, "af/+/telemetry")


def test_a_provisioner_without_the_bridge_leaves_its_account_alone() -> None:
    bridge = ClientState(
        "ampfleet-ocpp-bridge",
        textname=dynsec.service_text("ampfleet-ocpp-bridge", "pw", dynsec.BRIDGE_TEXT),
        roles=(dynsec.BRIDGE_ROLE,),
    )
    common = dict(service_user="svc", service_password="s", admin_user="adm")
    alone = dynsec.plan({bridge.username: bridge}, {}, [], **common)  # type: ignore[arg-type]
    assert "ampfleet-ocpp-bridge" not in alone.report.removed
    kept = dynsec.plan(
        {bridge.username: bridge},
        {dynsec.BRIDGE_ROLE: dynsec.bridge_acls()},
        [],
        bridge_user="ampfleet-ocpp-bridge",
        bridge_password="pw",
        **common,  # type: ignore[arg-type]
    )
    assert not [c for c in kept.commands if c.get("username") == "ampfleet-ocpp-bridge"]
    renamed = dynsec.plan(
        {bridge.username: bridge}, {}, [], bridge_user="b2", bridge_password="x", **common
    )  # type: ignore[arg-type]
    assert renamed.report.removed == ["ampfleet-ocpp-bridge"]


def test_the_broker_enforces_the_bridge_rules(link: Link, make_bridge: object) -> None:
    device_id, _ = link.device(protocol="ocpp", hardware_family="ocpp-generic")
    endpoint = bridge_endpoint(link)
    with (
        link.service() as cloud,
        link.mqtt(
            endpoint.username, endpoint.password, client_id="bridge-probe"
        ).connected() as bridge,
    ):
        assert not cloud.subscribe("af/+/telemetry").is_failure
        assert not cloud.subscribe("af/+/cmd").is_failure
        assert not bridge.subscribe(contract.topic(device_id, contract.CMD)).is_failure
        if link.kind == "embedded":  # Mosquitto's patterns also match a wildcard filter
            assert bridge.subscribe("af/+/cmd").is_failure
        assert bridge.subscribe("af/+/telemetry").is_failure
        bridge.publish(
            contract.topic(device_id, contract.TELEMETRY),
            contract.encode_telemetry(1, 1, {"power_w": 1.0}),
        )
        bridge.publish(
            contract.topic(device_id, contract.CMD), contract.encode_command("c1", "reboot", {})
        )
        cloud.publish(
            contract.topic(device_id, contract.CMD), contract.encode_command("c2", "reboot", {})
        )
        got = cloud.drain(quiet=1.0)
        assert [
            (m.topic, contract.decode_command(m.payload).id)
            for m in got
            if m.topic.endswith("/cmd")
        ] == [(contract.topic(device_id, contract.CMD), "c2")]
        assert [m.topic for m in got if m.topic.endswith("/telemetry")] == [
            contract.topic(device_id, contract.TELEMETRY)
        ]
        assert [contract.decode_command(m.payload).id for m in bridge.drain()] == ["c2"]
