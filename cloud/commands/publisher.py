"""Putting a command on the broker: ``af/{id}/cmd``, QoS 1, not retained (contract 2, 4.5).

The API uses a short-lived connection per command (``MqttCommandPublisher``, as the
configuration publisher does); the config worker's re-sends use its long-lived connection
(``ConnectionCommandPublisher``). A broker that cannot be reached is no error for the caller:
``send`` answers False and the command stays unsent until the worker re-sends it.
"""

from __future__ import annotations

from typing import Any, Protocol

from cloud.devicelink.publisher import ShortLivedPublisher, WorkerPublisher
from firmware.core import contract

EXTENSION = "ampfleet.command_publisher"  # where an app keeps its publisher (cloud.api.publishers)


class CommandPublisher(Protocol):
    """Puts one command on the broker."""

    def send_command(
        self, device_id: str, command_id: str, name: str, args: dict[str, Any], expires_ms: int
    ) -> bool:
        """True once the broker acknowledged the command; False (logged) otherwise."""
        ...


def message(
    device_id: str, command_id: str, name: str, args: dict[str, Any], expires_ms: int
) -> tuple[str, bytes, bool]:
    """(topic, payload, retain) of the command: never retained, or it would run again at every
    reconnect (contract 2)."""
    payload = contract.encode_command(command_id, name, args, expires_ms)
    return contract.topic(device_id, contract.CMD), payload, False


class MqttCommandPublisher(ShortLivedPublisher):
    """A short-lived connection per command, as the service account."""

    def send_command(
        self, device_id: str, command_id: str, name: str, args: dict[str, Any], expires_ms: int
    ) -> bool:
        """Connect, publish at QoS 1, wait for the PUBACK, disconnect."""
        batch = [message(device_id, command_id, name, args, expires_ms)]
        return self._publish(batch, f"command {name} {command_id} to {device_id}")


class ConnectionCommandPublisher(WorkerPublisher):
    """Publishes through a worker's long-lived connection."""

    def send_command(
        self, device_id: str, command_id: str, name: str, args: dict[str, Any], expires_ms: int
    ) -> bool:
        """Publish; True once the broker acknowledged it."""
        batch = [message(device_id, command_id, name, args, expires_ms)]
        return self._publish(batch, f"re-send of command {command_id}")
