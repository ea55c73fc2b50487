"""The ingest worker's broker link: the device link's ``Link`` on the worker's asyncio loop,
acknowledgements left to the worker.

Telemetry is the one high-volume stream, which is why the cloud's one client is gmqtt
(``docs/architecture.md``, "The MQTT client"): everything but the store's blocking I/O runs on
one loop, with no hand-offs between threads.

Acknowledgements: the link runs with ``manual_ack``, so a QoS 1 message is acknowledged only
when the worker calls :meth:`Receiver.ack` — once its sample is stored or spooled. Packet ids
are only valid on the connection that delivered them: each CONNACK starts a new
*generation*, and an ack for an older generation is dropped (the broker redelivers that
message; the store keeps one copy per device/node/timestamp, so it is stored once).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from cloud.devicelink.client import Link
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.subscriptions import Message

#: Called on the loop for every message: (topic, payload, packet id or None for QoS 0,
#: generation).
Deliver = Callable[[str, bytes, int | None, int], None]


class Receiver:
    """One persistent-session subscription, reconnecting on its own; runs on an asyncio loop."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        subscription: tuple[str, int],
        deliver: Deliver,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.subscription = subscription
        self._deliver = deliver
        self._link = Link(
            endpoint,
            client_id,
            clean_session=False,
            manual_ack=True,
            first_delay=reconnect_delay,
            max_delay=max_reconnect_delay,
        )
        self._link.subscriptions.add(subscription[0], subscription[1], self._on_message)

    @property
    def connected(self) -> threading.Event:
        """Set while connected (read from other threads: tests, health)."""
        return self._link.connected

    @property
    def refused(self) -> threading.Event:
        """Set once the broker refused the credentials."""
        return self._link.refused

    @property
    def generation(self) -> int:
        """The current connection's number."""
        return self._link.generation

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect, retrying with back-off until connected, refused or ``stopping``; gmqtt
        reconnects by itself after a connection is lost."""
        await self._link.run(stopping)

    async def close(self) -> None:
        """Disconnect; the broker keeps the session (and queues for it)."""
        await self._link.close()

    def ack(self, mid: int, generation: int) -> None:
        """Acknowledge ``mid`` if it came on the current connection (else the broker resends)."""
        self._link.ack(mid, generation)

    def pause(self, paused: bool) -> None:
        """Back-pressure: stop reading while the worker holds as much as it may."""
        if paused != self._link.paused:
            self._link.pause_reading(paused)

    @property
    def _paused(self) -> bool:  # what tests/ingest/test_pipeline.py waits for
        return self._link.paused

    def _on_message(self, message: Message) -> None:
        self._deliver(message.topic, message.payload, message.mid, message.generation)
