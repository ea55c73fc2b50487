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
from typing import Any, Protocol

from cloud.devicelink.publisher import ShortLivedPublisher, WorkerPublisher
from firmware.core import contract

log = logging.getLogger(__name__)

APPLY_COMMAND = "config.apply"
EXTENSION = "ampfleet.config_publisher"  # where an app keeps its publisher (cloud.api.publishers)


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


class MqttPublisher(ShortLivedPublisher):
    """A short-lived connection per send, as the service account: the API needs no
    long-lived broker connection per gunicorn worker for an occasional configuration change."""

    def send(self, device_id: str, version: int, values: dict[str, Any], change_id: str) -> bool:
        """Connect, publish both messages at QoS 1, wait for the PUBACKs, disconnect."""
        return self._publish(
            messages(device_id, version, values, change_id),
            f"desired config of {device_id} (change {change_id})",
        )

    def clear(self, device_id: str) -> bool:
        """Connect, publish the empty retained document at QoS 1, wait for the PUBACK."""
        return self._publish([clearing(device_id)], f"clearing of {device_id}'s desired config")


class ConnectionPublisher(WorkerPublisher):
    """Publishes through a worker's long-lived connection (the config worker's re-sends)."""

    def send(self, device_id: str, version: int, values: dict[str, Any], change_id: str) -> bool:
        """Publish both messages; True once the broker acknowledged them."""
        return self._publish(
            messages(device_id, version, values, change_id), f"re-send of {change_id}"
        )

    def clear(self, device_id: str) -> bool:
        """Publish the empty retained document; True once the broker acknowledged it."""
        return self._publish([clearing(device_id)], f"clearing of {device_id}'s desired config")
