"""The device contract's ACL and authentication, on both brokers, with real MQTT clients.

Every test runs against the embedded broker (amqtt + our plugins) and against Mosquitto
(dynamic security provisioned through the API): the same expectations hold for both.
"""

from __future__ import annotations

import secrets

import pytest

from tests.link import Link
from tests.mqtt import Mqtt


def refused(client: Mqtt) -> bool:
    """Whether the broker refused the CONNECT (and closed the connection)."""
    try:
        return client.connect().is_failure
    finally:
        client.close()


def test_device_telemetry_reaches_the_service_account(link: Link) -> None:
    device_id, password = link.device()
    with link.service() as service, link.mqtt(device_id, password).connected() as device:
        assert not service.subscribe(link.ingest_filter).is_failure
        device.publish(f"af/{device_id}/telemetry", b'{"p": 7}')
        message = service.expect()
        assert (message.topic, message.payload) == (f"af/{device_id}/telemetry", b'{"p": 7}')


def test_device_publishes_every_device_to_cloud_channel_and_nothing_else(link: Link) -> None:
    a, password = link.device()
    b, _ = link.device()
    with link.service() as service, link.mqtt(a, password).connected() as device:
        assert not service.subscribe("af/#").is_failure
        forbidden = [
            f"af/{b}/telemetry",  # another device's subtree
            f"af/{b}/status",
            f"af/{a}/cmd",  # a cloud-to-device channel of its own
            f"af/{a}/config/desired",
            f"af/{a}/ota",
            f"af/{a}/other",
            "af/telemetry",
            "elsewhere",
        ]
        for topic in forbidden:
            device.publish(topic, b"forbidden")
        allowed = ["telemetry", "status", "events", "config/reported", "cmd/result", "ota/status"]
        for channel in allowed:
            device.publish(f"af/{a}/{channel}", b"ok")
        got = [service.expect() for _ in allowed] + service.drain()
        assert [m.topic for m in got] == [f"af/{a}/{c}" for c in allowed]


def test_device_cannot_subscribe_outside_its_cloud_to_device_channels(link: Link) -> None:
    a, password = link.device()
    b, _ = link.device()
    with link.mqtt(a, password).connected() as device:
        for topic in (f"af/{b}/cmd", "#", "af/#", "af/+/cmd", f"af/{a}/#", f"af/{a}/telemetry"):
            assert device.subscribe(topic).is_failure, topic  # SUBACK 0x80
        for topic in (f"af/{a}/cmd", f"af/{a}/config/desired", f"af/{a}/ota"):
            assert not device.subscribe(topic).is_failure, topic
        with link.service() as service:
            service.publish(f"af/{b}/cmd", b"for b")
            service.publish(f"af/{a}/cmd", b"for a")
        message = device.expect()
        assert (message.topic, message.payload) == (f"af/{a}/cmd", b"for a")
        assert device.drain() == []


def test_service_publishes_cloud_to_device_channels_only(link: Link) -> None:
    a, password = link.device()
    with link.mqtt(a, password).connected() as device, link.service() as service:
        with link.service() as watcher:
            assert not watcher.subscribe("af/#").is_failure
            service.publish(f"af/{a}/telemetry", b"forged")  # may not speak for a device
            service.publish(f"af/{a}/ota", b"update")
            assert [m.topic for m in [watcher.expect(), *watcher.drain()]] == [f"af/{a}/ota"]
        assert not device.subscribe(f"af/{a}/config/desired").is_failure
        service.publish(f"af/{a}/config/desired", b"v2")
        assert device.expect().payload == b"v2"


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "unknown username", "anonymous", "no password", "other client id"],
)
def test_bad_credentials_are_refused_at_connect(link: Link, case: str) -> None:
    device_id, password = link.device()
    client = {
        "wrong secret": lambda: link.mqtt(device_id, password + "x"),
        "unknown username": lambda: link.mqtt("no-such-" + secrets.token_hex(4), password),
        "anonymous": lambda: link.mqtt(None, None, client_id="anon-" + secrets.token_hex(3)),
        "no password": lambda: link.mqtt(device_id, None),
        "other client id": lambda: link.mqtt(device_id, password, client_id=device_id + "-x"),
    }[case]()
    assert refused(client)
    with link.mqtt(device_id, password).connected():
        pass  # the real secret still works


def test_service_account_needs_its_password(link: Link) -> None:
    assert refused(link.mqtt(link.service_user, "not-the-password", client_id="svc-x"))


def test_a_will_outside_the_device_subtree_is_never_delivered(link: Link) -> None:
    a, password = link.device()
    b, b_password = link.device()
    with link.mqtt(b, b_password).connected() as victim, link.service() as service:
        assert not victim.subscribe(f"af/{b}/cmd").is_failure
        assert not service.subscribe(f"af/{a}/status").is_failure
        rogue = link.mqtt(a, password, will=(f"af/{b}/cmd", b"boom"))
        # The embedded broker refuses such a CONNECT; Mosquitto 2.0.11 accepts it and drops
        # the will when it would publish it. Either way nothing reaches the other device.
        if link.kind == "embedded":
            assert refused(rogue)
        else:
            assert not rogue.connect().is_failure
            rogue.drop()
            rogue.close()
        honest = link.mqtt(a, password, will=(f"af/{a}/status", b"offline")).connected()
        honest.drop()
        honest.close()
        assert service.expect().payload == b"offline"
        assert victim.drain() == []


def test_revoking_a_connected_device_disconnects_and_refuses_it(link: Link) -> None:
    device_id, password = link.device()
    with link.mqtt(device_id, password).connected() as device:
        assert link.admin.delete(f"/devices/{device_id}/credentials").status_code == 204
        assert device.wait_disconnected(5), "still connected 5 s after the revocation"
    assert refused(link.mqtt(device_id, password))


def test_a_second_connection_takes_over_the_first(link: Link) -> None:
    """MQTT-3.1.4-2; so a device cannot keep a connection that revocation does not see."""
    device_id, password = link.device()
    first = link.mqtt(device_id, password).connected()
    with first, link.mqtt(device_id, password).connected() as second:
        assert first.wait_disconnected(5)
        assert link.admin.delete(f"/devices/{device_id}/credentials").status_code == 204
        assert second.wait_disconnected(5)


def test_rotation_retires_the_old_secret(link: Link) -> None:
    device_id, old = link.device()
    with link.mqtt(device_id, old).connected() as device:
        rotated = link.admin.post(f"/devices/{device_id}/credentials/rotate")
        assert rotated.status_code == 200, rotated.get_json()
        new = rotated.get_json()["password"]
        assert new != old and rotated.get_json()["broker_synced"] is True
        # The session that used the old secret goes too.
        assert device.wait_disconnected(5)
    assert refused(link.mqtt(device_id, old))
    with link.mqtt(device_id, new).connected():
        pass


@pytest.mark.parametrize("state", ["suspended", "decommissioned"])
def test_suspended_and_decommissioned_devices_are_refused(link: Link, state: str) -> None:
    device_id, password = link.device()
    with link.mqtt(device_id, password).connected() as device:
        changed = link.admin.patch(f"/devices/{device_id}", json={"state": state})
        assert changed.status_code == 200, changed.get_json()
        link.sync()
        assert device.wait_disconnected(5)
    assert refused(link.mqtt(device_id, password))
    if state == "suspended":  # and back in service: the same secret works again
        assert (
            link.admin.patch(f"/devices/{device_id}", json={"state": "active"}).status_code == 200
        )
        link.sync()
        with link.mqtt(device_id, password).connected():
            pass


def test_a_deleted_device_is_disconnected_and_refused(link: Link) -> None:
    device_id, password = link.device()
    with link.mqtt(device_id, password).connected() as device:
        assert link.admin.delete(f"/devices/{device_id}").status_code == 204
        link.sync()
        assert device.wait_disconnected(5)
    assert refused(link.mqtt(device_id, password))


@pytest.mark.parametrize("a_was_subscribed", [True, False])
def test_retained_and_queued_messages_reach_only_their_own_device(
    link: Link, a_was_subscribed: bool
) -> None:
    """Retained desired documents are per device: another device's subscription to its own
    topic must never bring it one of them (MQTT-3.3.1-6 delivers retained messages only to
    matching subscriptions)."""
    a_id, a_password = link.device()
    b_id, b_password = link.device()
    if a_was_subscribed:
        # A persistent session that is offline: the broker queues A's messages for it.
        with link.mqtt(a_id, a_password, clean_session=False).connected() as a:
            assert a.subscribe(f"af/{a_id}/config/desired").value == 1
    with link.service() as service:
        info = service.client.publish(
            f"af/{a_id}/config/desired",
            b'{"v":1,"version":1,"values":{"max_current_a":20}}',
            qos=1,
            retain=True,
        )
        info.wait_for_publish(5)
    with link.mqtt(b_id, b_password, clean_session=False).connected() as b:
        assert b.subscribe(f"af/{b_id}/config/desired").value == 1
        leaked = [m for m in b.drain(quiet=1.0) if not m.topic.startswith(f"af/{b_id}/")]
    assert leaked == []
    with link.mqtt(a_id, a_password, clean_session=False).connected() as a:
        a.subscribe(f"af/{a_id}/config/desired")
        got = a.drain(quiet=1.0)
    assert {m.topic for m in got} == {f"af/{a_id}/config/desired"}
