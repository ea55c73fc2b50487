"""The bridge's broker connection: gmqtt on the bridge's asyncio loop, as the bridge account.

Horizontal scale without a routing table: each bridge instance subscribes to the
cloud-to-device topics (and the status) of exactly the chargers whose sockets it holds —
``hold`` when a charger connects, ``release`` when it goes — so the broker itself routes a
command to the instance that can deliver it. The session is clean: subscriptions of a crashed
instance must not outlive it (a persistent session would keep receiving, and queueing, the
commands of chargers that have since connected elsewhere). The device link's ``Link`` restates
the subscriptions of the chargers held on every CONNACK; its registry keeps exact topics in a
dict, so 10,000 chargers (40,000 subscriptions) cost one lookup per message.

Writes are coalesced (``Link(coalesce_writes=True)``): every packet written during one turn of
the loop goes to the socket in one ``send`` at the end of the turn. One MeterValues costs a
WebSocket answer and a telemetry PUBLISH; measured, the ``send`` system calls were most of the
bridge's time, and a turn of the loop handles many chargers' messages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from cloud.devicelink.client import Link
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.subscriptions import Message
from cloud.ocpp import metrics
from cloud.ocpp.bridges import bridge_id_of, status_topic
from firmware.core import contract
from firmware.core.topics import BRIDGE_FOLLOWS

log = logging.getLogger(__name__)

#: (device id, channel, payload) of a message on a followed topic of a held charger.
Deliver = Callable[[str, str, bytes], None]


def followed(device_id: str) -> list[str]:
    """The topics the bridge follows for one charger."""
    return [contract.topic(device_id, channel) for channel in BRIDGE_FOLLOWS]


def _flushed(packets: int) -> None:
    metrics.BROKER_PACKETS.inc(packets)
    metrics.BROKER_WRITES.inc()


class BridgeLink:
    """One clean-session MQTT connection carrying every held charger's traffic."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        deliver: Deliver,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.bridge_id = bridge_id_of(client_id)
        self.held: set[str] = set()
        self.dropped = 0  # publishes while the broker was away
        self._deliver = deliver
        self._on_connected = on_connected
        # The will names the bridge: its chargers are marked offline by the status worker
        # when the broker publishes it (cloud.ocpp.bridges).
        self._link = Link(
            endpoint,
            client_id,
            clean_session=True,
            coalesce_writes=True,
            on_flush=_flushed,
            will=(status_topic(self.bridge_id), contract.LAST_WILL),
            on_connected=self._connected,
        )

    @property
    def connected(self) -> threading.Event:
        """Set while connected to the broker."""
        return self._link.connected

    @property
    def refused(self) -> threading.Event:
        """Set once the broker refused the bridge's credentials."""
        return self._link.refused

    async def run(self, stopping: asyncio.Event, max_delay: float = 30.0) -> None:
        """Connect, retrying until connected, refused or ``stopping``; gmqtt reconnects by
        itself afterwards."""
        self._link.max_delay = max_delay
        await self._link.run(stopping)

    async def close(self) -> None:
        """Disconnect: a DISCONNECT discards the will (MQTT-3.1.2-10); the chargers' own
        statuses said offline as their sockets closed."""
        await self._link.close()

    def _connected(self) -> None:
        """On every CONNACK: clear the will, should it have fired while the bridge was cut off
        from the broker (an empty retained message deletes it, MQTT-3.3.1-10), and announce
        the chargers again, which that will marked offline."""
        self._link.publish_nowait(status_topic(self.bridge_id), b"", 1, retain=True)
        if self._on_connected is not None:
            self._on_connected()

    def hold(self, device_id: str) -> None:
        """Follow a charger's topics (its socket is here now)."""
        self.held.add(device_id)
        self._link.subscribe_many(followed(device_id), self._on_message)

    def release(self, device_id: str) -> None:
        """Stop following a charger's topics (its socket is gone)."""
        self.held.discard(device_id)
        self._link.unsubscribe(followed(device_id))

    def publish(self, device_id: str, channel: str, payload: bytes, retain: bool = False) -> bool:
        """Publish for a charger (QoS of the channel, contract 2); False while disconnected."""
        topic = contract.topic(device_id, channel)
        if not self._link.publish_nowait(topic, payload, contract.QOS[channel], retain):
            self.dropped += 1
            return False
        return True

    # --- on the loop ----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        # Only the held chargers' followed topics are registered, so only they arrive here
        # (the embedded broker also hands a new subscriber retained messages of topics it did
        # not subscribe to: the link's registry drops those). A failing delivery is logged
        # and counted by the link.
        try:
            device_id, channel = contract.parse_topic(message.topic)
        except contract.ContractError:
            return
        if device_id in self.held and channel in BRIDGE_FOLLOWS:
            self._deliver(device_id, channel, message.payload)
