"""Helpers of the OCPP tests: waiting from async code, and reading what the bridge published."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Callable
from typing import Any

from firmware.core import contract
from tests.helpers import Client
from tests.mqtt import Mqtt

TIMEOUT = 20.0


async def eventually(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``condition`` (run in a thread: it may call the API) until it returns a truthy
    value; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Published:
    """Everything the observer saw, kept so that several checks can look at it."""

    def __init__(self, observer: Mqtt) -> None:
        self.observer = observer
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def _drain(self) -> None:
        while True:
            try:
                message = self.observer.messages.get_nowait()
            except queue.Empty:
                return
            if not message.payload:
                continue
            device_id, channel = contract.parse_topic(message.topic)
            self.seen.append((device_id, channel, json.loads(message.payload)))

    def of(self, device_id: str, channel: str) -> list[dict[str, Any]]:
        """The payloads published so far for ``device_id`` on ``channel``."""
        self._drain()
        return [p for d, c, p in self.seen if d == device_id and c == channel]

    def events(self, device_id: str, type_: str) -> list[dict[str, Any]]:
        """The events of one type."""
        return [e for e in self.of(device_id, "events") if e["type"] == type_]

    async def event(self, device_id: str, type_: str) -> dict[str, Any]:
        """The first event of ``type_`` (waiting for it)."""
        found = await eventually(lambda: self.events(device_id, type_), f"event {type_}")
        event: dict[str, Any] = found[0]
        return event


def status_of(client: Client, device_id: str) -> dict[str, Any]:
    """The device's status through the API."""
    response = client.get(f"/devices/{device_id}/status")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def latest(client: Client, device_id: str) -> dict[str, Any]:
    """The device's latest telemetry values through the API ({} when none yet)."""
    response = client.get(f"/devices/{device_id}/telemetry/latest")
    if response.status_code != 200:
        return {}
    values: dict[str, Any] = {k: v["value"] for k, v in response.get_json()["values"].items()}
    return values


def command(client: Client, device_id: str, name: str, **args: Any) -> dict[str, Any]:
    """Send a command through the API (asserting 202)."""
    response = client.post(f"/devices/{device_id}/commands", json={"name": name, "args": args})
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def final(client: Client, device_id: str, command_id: str) -> dict[str, Any] | None:
    """The command once it has a final state, else None."""
    body: dict[str, Any] = client.get(f"/devices/{device_id}/commands/{command_id}").get_json()
    return body if body["state"] not in ("pending", "accepted") else None
