"""The device link's client against the real brokers (amqtt and Mosquitto): PUBACK futures,
refused credentials, a failing handler, short-lived publishing and ending a session."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.admin import DeviceAccount
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.errors import CredentialsRefusedError, LinkError, NotConnectedError
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink, end_session, publish_batch
from firmware.core import contract
from tests.link import Link
from tests.mqtt import Mqtt
from tests.services.mosquitto import Mosquitto, free_port


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def service_link(link: Link, **options: object) -> ThreadedLink:
    return ThreadedLink(link.endpoint(), f"svc-{secrets.token_hex(4)}", **options)  # type: ignore[arg-type]


def test_a_qos1_publish_returns_once_the_broker_acknowledged_it(link: Link) -> None:
    device_id, password = link.device()
    with link.mqtt(device_id, password).connected() as device:
        device.subscribe(contract.topic(device_id, contract.CMD))
        with service_link(link) as service:
            service.wait_connected()
            service.publish(contract.topic(device_id, contract.CMD), b'{"id":"c1"}', qos=1)
        assert device.expect().payload == b'{"id":"c1"}'


def test_a_failing_handler_is_counted_and_the_next_message_still_handled(link: Link) -> None:
    device_id, password = link.device()
    seen: list[bytes] = []

    def handler(message: Message) -> None:
        seen.append(message.payload)
        if len(seen) == 1:
            raise RuntimeError("a bug in one handler")

    with service_link(link) as service:
        service.wait_connected()
        assert service.subscribe_wait(contract.topic(device_id, contract.EVENTS), handler) == [1]
        with link.mqtt(device_id, password).connected() as device:
            device.publish(contract.topic(device_id, contract.EVENTS), b"first")
            device.publish(contract.topic(device_id, contract.EVENTS), b"second")
        wait_for(lambda: len(seen) == 2, "both messages handled")
        assert service.link.failures == 1


def test_refused_credentials_stop_the_retries(link: Link) -> None:
    endpoint = Endpoint(link.host, link.port, False, link.service_user, "not-the-password")
    with ThreadedLink(endpoint, f"svc-{secrets.token_hex(4)}", first_delay=0.05) as service:
        with pytest.raises(CredentialsRefusedError):
            service.wait_connected(10)
        assert service.refused.is_set() and not service.connected.is_set()


def test_short_lived_publishing_and_ending_a_session_say_when_they_failed(link: Link) -> None:
    bad = Endpoint(link.host, link.port, False, link.service_user, "not-the-password")
    with pytest.raises(ConnectionError):
        end_session(bad, f"svc-{secrets.token_hex(4)}")
    with pytest.raises(LinkError):
        publish_batch(bad, [("af/x/cmd", b"{}", False)])
    nowhere = Endpoint("127.0.0.1", free_port(), False, link.service_user, "x")
    with pytest.raises(NotConnectedError):
        publish_batch(nowhere, [("af/x/cmd", b"{}", False)], timeout=5)
    end_session(link.endpoint(), f"svc-{secrets.token_hex(4)}")  # and a good one works


def test_a_clean_session_link_resubscribes_after_the_broker_restarts(tmp_path: Path) -> None:
    device_id, password = "af-restart-1", "restart-password-1"
    with Mosquitto(tmp_path / "mosquitto") as server:
        server.provisioner().resync([DeviceAccount(device_id, "1", True, password)])
        endpoint = Endpoint(
            server.host, server.port, False, server.service_user, server.service_password
        )
        seen: list[bytes] = []
        topic = contract.topic(device_id, contract.EVENTS)
        with ThreadedLink(endpoint, f"svc-{secrets.token_hex(4)}", first_delay=0.1) as service:
            service.subscribe(topic, lambda m: seen.append(m.payload))
            service.wait_connected()
            server.stop()
            wait_for(lambda: not service.connected.is_set(), "the loss seen")
            server.start()
            # A clean session again (the broker kept no subscription for it): only the
            # resubscription on this CONNACK brings the event.
            wait_for(lambda: service.generation == 2, "reconnected", timeout=30)
            with Mqtt(server.host, server.port, device_id, password).connected() as device:
                deadline = time.monotonic() + 10
                while not seen and time.monotonic() < deadline:
                    device.publish(topic, b"after the restart")
                    time.sleep(0.2)
        assert seen and seen[0] == b"after the restart"


def test_closing_a_link_whose_broker_is_gone_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker stops first (as on Ctrl-C of `ampfleet up`), then the service: no DISCONNECT
    written to the closed socket, no traceback of the reconnect that close cancels."""
    caplog.set_level(logging.DEBUG)
    with Mosquitto(tmp_path / "mosquitto") as server:
        endpoint = Endpoint(
            server.host, server.port, False, server.service_user, server.service_password
        )
        service = ThreadedLink(endpoint, f"svc-{secrets.token_hex(4)}", first_delay=5)
        with service:
            service.wait_connected()
            server.stop()
            wait_for(lambda: not service.connected.is_set(), "the loss seen")
            time.sleep(0.5)  # gmqtt's reconnect has begun: asleep in its back-off
        assert service.link.generation == 1
    logged = caplog.text
    assert "TRYING WRITE TO CLOSED SOCKET" not in logged
    assert "Traceback" not in logged and "CancelledError" not in logged
    assert not [r for r in caplog.records if r.exc_info], logged
