"""An in-memory MQTT 3.1.1 broker and the master's transport to it: no sockets.

Enough of MQTT for the device contract to be exercised faithfully: persistent sessions (clean
session false: subscriptions survive, QoS 1 messages queue while the client is away), retained
messages (an empty retained payload deletes, MQTT-3.3.1-10/11), the last will (published when
a client is lost, not after a DISCONNECT, MQTT-3.14.4-3), ``+``/``#`` filters, broker outages
and refused credentials. Delivery to a device is queued and handed over by ``poll()`` (called
at the start of every master step), as a polled umqtt client would: a master never re-enters
itself.

For a real broker the fleet simulator provides its own transport (e.g. asyncio) with the same
four methods; see firmware/hal/interface.py ``MqttTransport``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from firmware.hal.interface import MqttTransport


@dataclasses.dataclass(frozen=True)
class Message:
    """One publication as the broker saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    sender: str | None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching with ``+`` (one level) and ``#`` (the rest)."""
    filter_levels = topic_filter.split("/")
    levels = topic.split("/")
    for index, part in enumerate(filter_levels):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(filter_levels) == len(levels)


class _Session:
    __slots__ = ("queue", "subscriptions", "transport", "will")

    def __init__(self) -> None:
        self.subscriptions: dict[str, int] = {}
        self.queue: deque[tuple[str, bytes]] = deque(maxlen=1000)  # bounded, like a broker's
        self.transport: MemoryTransport | None = None
        self.will: tuple[str, bytes] | None = None


class MemoryBroker:
    """The broker. ``log`` keeps every publication (turn ``keep_log`` off for big fleets)."""

    def __init__(self, keep_log: bool = True) -> None:
        self.up = True
        self.refused: set[str] = set()  # client ids whose credentials are refused (CONNACK 5)
        self.retained: dict[str, bytes] = {}
        self.sessions: dict[str, _Session] = {}
        self.keep_log = keep_log
        self.log: list[Message] = []
        self.observers: list[tuple[str, list[Message]]] = []
        # Who subscribed to what: a dict for exact topics, a list for filters with wildcards,
        # so that a publish costs the same for 10 devices or 10,000.
        self._exact: dict[str, set[str]] = {}
        self._wildcards: list[tuple[str, str]] = []

    # --- clients ----------------------------------------------------------------------------

    def connect(self, transport: MemoryTransport, client_id: str, will: tuple[str, bytes]) -> str:
        """CONNECT: "ok", "refused" (bad credentials) or "unavailable" (broker down)."""
        if not self.up:
            return "unavailable"
        if client_id in self.refused:
            return "refused"
        session = self.sessions.setdefault(client_id, _Session())
        if session.transport is not None and session.transport is not transport:
            self._lose(client_id)  # MQTT-3.1.4-2: a second connection takes over the id
        session.transport = transport
        session.will = will
        while session.queue:
            transport.deliver(*session.queue.popleft())
        return "ok"

    def disconnect(self, client_id: str) -> None:
        """A clean DISCONNECT: the will is discarded."""
        session = self.sessions.get(client_id)
        if session is not None:
            session.transport = None
            session.will = None

    def drop(self, client_id: str) -> None:
        """The network lost the client: the broker publishes its will, the client finds out."""
        session = self.sessions.get(client_id)
        if session is not None and session.transport is not None:
            transport = session.transport
            self._lose(client_id)
            transport.lost()

    def outage(self) -> None:
        """The broker goes away: every client is lost, connects fail until ``restore``."""
        for client_id in list(self.sessions):
            self.drop(client_id)
        self.up = False

    def restore(self) -> None:
        """The broker is back."""
        self.up = True

    def _lose(self, client_id: str) -> None:
        session = self.sessions[client_id]
        will = session.will
        session.transport = None
        session.will = None
        if will is not None:
            self.publish(will[0], will[1], 1, True, sender=client_id)

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        """SUBSCRIBE: retained messages that match are delivered at once."""
        session = self.sessions[client_id]
        if topic_filter not in session.subscriptions:
            if "+" in topic_filter or "#" in topic_filter:
                self._wildcards.append((topic_filter, client_id))
            else:
                self._exact.setdefault(topic_filter, set()).add(client_id)
        session.subscriptions[topic_filter] = qos
        if session.transport is not None:
            for topic, payload in self.retained.items():
                if topic_matches(topic_filter, topic):
                    session.transport.deliver(topic, payload)

    def connected(self, client_id: str) -> bool:
        """True while the client has a connection."""
        session = self.sessions.get(client_id)
        return session is not None and session.transport is not None

    # --- messages ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        sender: str | None = None,
    ) -> None:
        """PUBLISH from a client (``sender``) or from the cloud (None)."""
        message = Message(topic, bytes(payload), qos, retain, sender)
        if self.keep_log:
            self.log.append(message)
        if retain:
            if payload:
                self.retained[topic] = message.payload
            else:
                self.retained.pop(topic, None)
        for topic_filter, sink in self.observers:
            if topic_matches(topic_filter, topic):
                sink.append(message)
        receivers = set(self._exact.get(topic, ()))
        receivers.update(c for f, c in self._wildcards if topic_matches(f, topic))
        for client_id in sorted(receivers):
            session = self.sessions[client_id]
            if session.transport is not None:
                session.transport.deliver(topic, message.payload)
            elif qos > 0:
                session.queue.append((topic, message.payload))

    def observe(self, topic_filter: str) -> list[Message]:
        """A list that receives every later publication matching ``topic_filter``."""
        sink: list[Message] = []
        self.observers.append((topic_filter, sink))
        return sink

    def messages(self, topic_filter: str = "#") -> list[Message]:
        """Logged publications matching ``topic_filter``, oldest first."""
        return [m for m in self.log if topic_matches(topic_filter, m.topic)]


class MemoryTransport(MqttTransport):
    """A master's connection to a ``MemoryBroker`` (firmware/hal/interface.py contract)."""

    __slots__ = ("_events", "broker", "client_id", "is_connected", "listener")

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.listener: Any = None
        self.client_id: str | None = None
        self.is_connected = False
        self._events: deque[tuple[Any, ...]] | None = None  # created on the first event

    def attach(self, listener: Any) -> None:
        """The master that receives connection events and messages."""
        self.listener = listener

    def _queue(self, event: tuple[Any, ...]) -> None:
        if self._events is None:
            self._events = deque()
        self._events.append(event)

    def connect(self, client_id: str, will_topic: str, will_payload: bytes) -> None:
        """CONNECT; the CONNACK is reported at once (like a blocking umqtt connect)."""
        self.client_id = client_id
        result = self.broker.connect(self, client_id, (will_topic, will_payload))
        self.is_connected = result == "ok"
        if self.is_connected:
            self.listener.on_connected()
        else:
            self.listener.on_connect_failed(result == "refused")

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """PUBLISH; OSError once the connection is gone."""
        if not self.is_connected:
            raise OSError("not connected")
        self.broker.publish(topic, payload, qos, retain, sender=self.client_id)

    def subscribe(self, topic: str, qos: int) -> None:
        """SUBSCRIBE."""
        if not self.is_connected or self.client_id is None:
            raise OSError("not connected")
        self.broker.subscribe(self.client_id, topic, qos)

    def disconnect(self) -> None:
        """DISCONNECT (the will is discarded)."""
        if self.is_connected and self.client_id is not None:
            self.broker.disconnect(self.client_id)
        self.is_connected = False

    def poll(self) -> None:
        """Hand what arrived to the master, in order."""
        events = self._events
        while events:
            event = events.popleft()
            if event[0] == "message":
                self.listener.on_message(event[1], event[2])
            elif event[0] == "lost":
                self.listener.on_disconnected()
        self._events = None

    # --- called by the broker ---------------------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> None:
        """A message for this client (queued until ``poll``)."""
        self._queue(("message", topic, payload))

    def lost(self) -> None:
        """The broker lost this connection."""
        self.is_connected = False
        self._queue(("lost",))
