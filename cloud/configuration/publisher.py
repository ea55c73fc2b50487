"""Sending a desired document to a device: the retained ``config/desired`` and the
``config.apply`` command that carries the change's correlation id.

The retained document is the state: the broker holds it, and hands it to the device whenever it
subscribes, so a device that was offline gets the latest desired set when it comes back
(docs/device-contract.md 4.4, step 1). The command (not retained: contract 2) asks the device to
answer on ``cmd/result`` under the change's id, which is how a refusal reaches the cloud with
its reason. A broker that cannot be reached is not an error for the caller: ``send`` answers
False and the change stays unsent until the config worker re-sends it.

When a device is deleted, ``clear`` removes its retained document (an empty retained payload,
MQTT-3.3.1-10), so that neither a device re-registered under the same id nor a client that
subscribes later is handed a stale desired set.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from flask import current_app

from cloud.devicelink.mqtt import Endpoint, ServiceConnection, service_endpoint
from cloud.settings import Settings
from firmware.core import contract

log = logging.getLogger(__name__)

APPLY_COMMAND = "config.apply"
EXTENSION = "ampfleet.config_publisher"  # where an app keeps its publisher (tests swap it)


class DesiredPublisher(Protocol):
    """Puts a desired document (and its correlation command) on the broker."""

    def send(self, device_id: str, version: int, values: dict[str, Any], change_id: str) -> bool:
        """True once the broker acknowledged both messages; False (logged) otherwise."""
        ...

    def clear(self, device_id: str) -> bool:
        """Remove the device's retained desired document; True once the broker acknowledged."""
        ...


def messages(
    device_id: str, version: int, values: dict[str, Any], change_id: str
) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, retain) of the two messages, in the order they must be published.

    Desired first: a device that gets the command before the document it names would have to
    wait for it anyway, and this way a device answering at once finds the version it applied.
    """
    return [
        (
            contract.topic(device_id, contract.CONFIG_DESIRED),
            contract.encode_config(version, values),
            True,
        ),
        (
            contract.topic(device_id, contract.CMD),
            contract.encode_command(change_id, APPLY_COMMAND, {"version": version}),
            False,
        ),
    ]


def clearing(device_id: str) -> tuple[str, bytes, bool]:
    """(topic, payload, retain) of the message that removes the retained desired document:
    empty and retained (MQTT-3.3.1-10); subscribers get it too, and firmware ignores it."""
    return contract.topic(device_id, contract.CONFIG_DESIRED), b"", True


def app_publisher() -> DesiredPublisher:
    """The app's desired-document publisher (the service account on ``broker_url``)."""
    found: DesiredPublisher | None = current_app.extensions.get(EXTENSION)
    if found is None:
        settings: Settings = current_app.extensions["ampfleet.settings"]
        found = MqttPublisher(service_endpoint(settings))
        current_app.extensions[EXTENSION] = found
    return found


class MqttPublisher:
    """A short-lived paho connection per send, as the service account: the API needs no
    long-lived broker connection per gunicorn worker for an occasional configuration change."""

    def __init__(self, endpoint: Endpoint, timeout: float = 3.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def send(self, device_id: str, version: int, values: dict[str, Any], change_id: str) -> bool:
        """Connect, publish both messages at QoS 1, wait for the PUBACKs, disconnect."""
        return self._publish(
            messages(device_id, version, values, change_id),
            f"desired config of {device_id} (change {change_id})",
        )

    def clear(self, device_id: str) -> bool:
        """Connect, publish the empty retained document at QoS 1, wait for the PUBACK."""
        return self._publish([clearing(device_id)], f"clearing of {device_id}'s desired config")

    def _publish(self, batch: list[tuple[str, bytes, bool]], what: str) -> bool:
        connected = threading.Event()
        outcome: list[Any] = []
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{self.endpoint.username}-config-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set(
                ca_certs=self.endpoint.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        client.connect_timeout = self.timeout

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            outcome.append(reason)
            connected.set()

        client.on_connect = on_connect
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except OSError as exc:
            log.warning("broker unreachable, %s not sent: %s", what, exc)
            return False
        client.loop_start()
        try:
            if not connected.wait(self.timeout) or outcome[0].is_failure:
                log.warning("broker refused or did not answer; %s not sent", what)
                return False
            infos = [
                client.publish(topic, payload, qos=1, retain=retain)
                for topic, payload, retain in batch
            ]
            for info in infos:
                info.wait_for_publish(self.timeout)
            return all(info.is_published() for info in infos)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("%s not sent: %s", what, exc)
            return False
        finally:
            client.disconnect()
            client.loop_stop()


class ConnectionPublisher:
    """Publishes through a worker's long-lived connection (the config worker's re-sends)."""

    def __init__(self, connection: ServiceConnection, timeout: float = 5.0) -> None:
        self.connection = connection
        self.timeout = timeout

    def send(self, device_id: str, version: int, values: dict[str, Any], change_id: str) -> bool:
        """Publish both messages; True once the broker acknowledged them."""
        return self._publish(
            messages(device_id, version, values, change_id), f"re-send of {change_id}"
        )

    def clear(self, device_id: str) -> bool:
        """Publish the empty retained document; True once the broker acknowledged it."""
        return self._publish([clearing(device_id)], f"clearing of {device_id}'s desired config")

    def _publish(self, batch: list[tuple[str, bytes, bool]], what: str) -> bool:
        if not self.connection.connected.is_set():
            return False
        try:
            infos = [
                self.connection.publish(topic, payload, qos=1, retain=retain)
                for topic, payload, retain in batch
            ]
            for info in infos:
                info.wait_for_publish(self.timeout)
            return all(info.is_published() for info in infos)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("%s failed: %s", what, exc)
            return False
