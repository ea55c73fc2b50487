"""The bridge's broker connection: gmqtt on the bridge's asyncio loop, as the bridge account.

Horizontal scale without a routing table: each bridge instance subscribes to the
cloud-to-device topics (and the status) of exactly the chargers whose sockets it holds —
``hold`` when a charger connects, ``release`` when it goes — so the broker itself routes a
command to the instance that can deliver it. The session is clean: subscriptions of a crashed
instance must not outlive it (a persistent session would keep receiving, and queueing, the
commands of chargers that have since connected elsewhere). Every CONNACK restates the
subscriptions of the chargers held.

gmqtt 0.8.0 (pinned) keeps every subscription in a list that it scans on each SUBACK and
UNSUBSCRIBE: with 10,000 chargers (40,000 subscriptions) a connection storm spent its time
there (measured: O(n²), 110 s for 10,000 connections). ``held`` is this class's own record, so
the SUBSCRIBE and UNSUBSCRIBE packets go out through gmqtt's connection (``_connection``)
without that bookkeeping; nothing else of gmqtt uses it, the resubscription after a reconnect
being done here.

Writes are coalesced: every packet gmqtt writes during one turn of the loop goes to the socket
in one ``send`` at the end of the turn (``_Coalescing``). One MeterValues costs a WebSocket
answer and a telemetry PUBLISH; measured, the ``send`` system calls were most of the bridge's
time, and a turn of the loop handles many chargers' messages.
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
from cloud.ocpp import metrics
from firmware.core import contract
from firmware.core.topics import BRIDGE_FOLLOWS

log = logging.getLogger(__name__)

#: (device id, channel, payload) of a message on a followed topic of a held charger.
Deliver = Callable[[str, str, bytes], None]

_CHUNK = 200  # topics per SUBSCRIBE / UNSUBSCRIBE after a reconnect


class _Coalescing:
    """Replaces the ``write_data`` of one gmqtt protocol (a connection's) with a buffered one
    that flushes once per loop turn; ``flush`` also runs before a disconnect."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._write = protocol.write_data
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        protocol.write_data = self.write

    def detach(self) -> None:
        """Flush, and write straight through again (the DISCONNECT must not wait a turn)."""
        self.flush()
        self._protocol.write_data = self._write

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        """Write what the turn buffered, in one write."""
        if self._buffer:
            metrics.BROKER_PACKETS.inc(len(self._buffer))
            metrics.BROKER_WRITES.inc()
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._write(data)


def followed(device_id: str) -> list[str]:
    """The topics the bridge follows for one charger."""
    return [contract.topic(device_id, channel) for channel in BRIDGE_FOLLOWS]


class BridgeLink:
    """One clean-session MQTT connection carrying every held charger's traffic."""

    def __init__(self, endpoint: Endpoint, client_id: str, deliver: Deliver) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.held: set[str] = set()
        self.dropped = 0  # publishes while the broker was away
        self._deliver = deliver
        self._client = gmqtt.Client(client_id, clean_session=True)
        self._client.set_auth_credentials(endpoint.username, endpoint.password)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._writer: _Coalescing | None = None
        self._closing = False

    async def run(self, stopping: asyncio.Event, max_delay: float = 30.0) -> None:
        """Connect, retrying until connected, refused or ``stopping``; gmqtt reconnects by
        itself afterwards."""
        await gmqtt_connect.connect(
            self._client, self.endpoint, stopping, self.refused, max_delay=max_delay
        )

    async def close(self) -> None:
        """Disconnect."""
        self._closing = True
        self.connected.clear()
        if self._writer is not None:
            self._writer.detach()
        try:
            await self._client.disconnect()
        except Exception as exc:  # already gone
            log.debug("disconnect: %s", exc)

    def hold(self, device_id: str) -> None:
        """Follow a charger's topics (its socket is here now)."""
        self.held.add(device_id)
        if self._client.is_connected:
            self._subscribe(followed(device_id))

    def release(self, device_id: str) -> None:
        """Stop following a charger's topics (its socket is gone)."""
        self.held.discard(device_id)
        if self._client.is_connected:
            self._client._connection.unsubscribe(followed(device_id))

    def _subscribe(self, topics: list[str]) -> None:
        self._client._connection.subscribe([gmqtt.Subscription(t, qos=1) for t in topics])

    def publish(self, device_id: str, channel: str, payload: bytes, retain: bool = False) -> bool:
        """Publish for a charger (QoS of the channel, contract 2); False while disconnected."""
        if not self._client.is_connected:
            self.dropped += 1
            return False
        topic = contract.topic(device_id, channel)
        self._client.publish(topic, payload, qos=contract.QOS[channel], retain=retain)
        return True

    # --- gmqtt callbacks, on the loop ---------------------------------------------------

    def _on_connect(self, _client: Any, _flags: Any, _rc: Any, _properties: Any) -> None:
        self._writer = _Coalescing(self._client._connection._protocol)
        topics = [t for device_id in sorted(self.held) for t in followed(device_id)]
        for start in range(0, len(topics), _CHUNK):
            self._subscribe(topics[start : start + _CHUNK])
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
            log.info("disconnected from the broker")
        else:
            log.warning("lost the broker (%s)", exc or "disconnected")

    def _on_message(self, _c: Any, topic: Any, payload: bytes, _qos: int, _props: Any) -> int:
        try:
            device_id, channel = contract.parse_topic(topic)
        except contract.ContractError:
            return 0
        # The embedded broker also hands a new subscriber retained messages of topics it did
        # not subscribe to: only the held chargers' followed channels pass.
        if device_id in self.held and channel in BRIDGE_FOLLOWS:
            try:
                self._deliver(device_id, channel, bytes(payload))
            except Exception:
                log.exception("bridge failed on %s", topic)
        return 0
