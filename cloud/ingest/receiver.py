"""The ingest worker's broker link: gmqtt on an asyncio loop, acknowledgements left to the owner.

Why not the paho ``ServiceConnection`` the other workers use: telemetry is the one high-volume
stream. Measured on the benchmark machine, paho's receive path alone took 35 µs per QoS 1
message against gmqtt's 8-10 µs, and the paho-based worker spent most of its time in hand-offs
between its network and writer threads (each manual ack from the writer cost a socket-pair
wake-up). Here everything but the store's blocking I/O runs on one loop.

Acknowledgements: gmqtt 0.8 acknowledges a QoS 1 message when ``on_message`` returns, or, for a
coroutine handler, when its task ends (one task per message: 25 µs each). The worker must
acknowledge only once a sample is stored or spooled, so :class:`_DeferredAcks` replaces gmqtt's
QoS 1 hook to hand over the packet id and leave the PUBACK to :meth:`Receiver.ack`.

Packet ids are only valid on the connection that delivered them: each CONNACK starts a new
*generation*, and an ack for an older generation is dropped (the broker redelivers that message;
the store keeps one copy per device/node/timestamp, so it is stored once).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import gmqtt

from cloud.devicelink import gmqtt_connect
from cloud.devicelink.mqtt import Endpoint

log = logging.getLogger(__name__)

#: Called on the loop for every message: (topic, payload, packet id or None for QoS 0,
#: generation). A topic gmqtt could not decode as UTF-8 arrives as bytes.
Deliver = Callable[[str | bytes, bytes, int | None, int], None]


class _DeferredAcks:
    """gmqtt 0.8.0 (pinned) internals, in one place: the QoS 1 hook of its packet handler, its
    PUBACK sender and its transport. ``tests/ingest/test_pipeline.py`` checks that what the
    worker stored is acknowledged (nothing comes back) and that nothing is acknowledged early.
    """

    def __init__(self, client: gmqtt.Client, deliver: Callable[[Any, bytes, int], None]) -> None:
        self._client = client
        self._handler = client._package_handler

        def qos1(mid: int, packet: bytes, print_topic: Any, _properties: Any) -> None:
            deliver(print_topic, packet, mid)

        # Shadows MqttPackageHandler._handle_qos_1_publish_packet, which would ack on return.
        self._handler._handle_qos_1_publish_packet = qos1

    def puback(self, mid: int) -> None:
        """Send the PUBACK of ``mid`` on the current connection."""
        self._handler._send_puback(mid)

    def pause_reading(self, paused: bool) -> None:
        """Stop (or resume) reading the socket: the broker then holds what it has not sent."""
        transport = getattr(self._client._connection, "_transport", None)
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()


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
        self.connected = threading.Event()  # read from other threads (tests, health)
        self.refused = threading.Event()
        self.generation = 0
        self._deliver = deliver
        self._delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._paused = False
        self._closing = False
        self._client = gmqtt.Client(
            client_id, clean_session=False, optimistic_acknowledgement=False
        )
        self._acks = _DeferredAcks(self._client, self._on_qos1)
        self._client.set_auth_credentials(endpoint.username, endpoint.password)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": reconnect_delay})
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_qos0

    async def run(self, stopping: asyncio.Event) -> None:
        """Connect, retrying with back-off until connected, refused or ``stopping``; gmqtt
        reconnects by itself after a connection is lost."""
        await gmqtt_connect.connect(
            self._client, self.endpoint, stopping, self.refused, self._delay, self._max_delay
        )

    async def close(self) -> None:
        """Disconnect; the broker keeps the session (and queues for it)."""
        self._closing = True
        self.connected.clear()
        try:
            await self._client.disconnect()
        except Exception as exc:  # already gone: nothing left to close cleanly
            log.debug("disconnect: %s", exc)

    def ack(self, mid: int, generation: int) -> None:
        """Acknowledge ``mid`` if it came on the current connection (else the broker resends)."""
        if generation == self.generation and self.connected.is_set():
            self._acks.puback(mid)

    def pause(self, paused: bool) -> None:
        """Back-pressure: stop reading while the worker holds as much as it may."""
        if paused != self._paused:
            self._paused = paused
            self._acks.pause_reading(paused)

    # -- gmqtt callbacks, on the loop ---------------------------------------------------------
    def _on_qos1(self, topic: Any, payload: bytes, mid: int) -> None:
        self._deliver(topic, payload, mid, self.generation)

    def _on_qos0(
        self, _client: Any, topic: Any, payload: bytes, _qos: int, _properties: Any
    ) -> int:
        self._deliver(topic, payload, None, self.generation)
        return 0

    def _on_connect(self, client: Any, _flags: Any, _rc: Any, _properties: Any) -> None:
        # Restated on every CONNACK: a broker that lost its state has lost the subscription.
        self.generation += 1
        self._paused = False
        client.subscribe(gmqtt.Subscription(self.subscription[0], qos=self.subscription[1]))
        self.connected.set()
        log.info(
            "connected to %s:%s as %s",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.username,
        )

    def _on_disconnect(self, _client: Any, _packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        if self._closing:
            log.info("disconnected from %s:%s", self.endpoint.host, self.endpoint.port)
        else:
            log.warning("lost the broker (%s); reconnecting", exc or "disconnected")
