"""A simulated master's connection to a real broker: gmqtt on the fleet's asyncio loop.

Implements the HAL's ``MqttTransport`` (firmware/hal/interface.py) for CPython, so the real
firmware core runs against Mosquitto or the embedded broker exactly as on a board: the master's
link decides when to connect and how long to back off; this transport only does what it is told
and reports what happened through ``poll()``, on the master's own step.

Reconnecting is the firmware's job (exponential back-off with jitter, docs/device-contract.md 6),
so gmqtt's own reconnection is switched off. A ``reconnect_retries`` below gmqtt's "unlimited"
(-1) makes its ``_allow_reconnect`` refuse every attempt; 0 would still allow one. The client
object is kept across connections: gmqtt resends on the next CONNACK the QoS 1 messages the
broker never acknowledged, as the MQTT session rules ask of a device.

One gmqtt client per simulated charger costs about 19 KiB; no thread, one socket.

Mutual TLS: ``context`` may be a callable that returns the ``ssl.SSLContext`` to use, called
at every connection attempt (``firmware.host.boards.ClientTls``: the client certificate the
charger's flash holds now, so a renewed one is presented from the next connection on).
``password`` is then None: the broker takes the certificate's CN as the username.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from firmware.hal.interface import MqttTransport

log = logging.getLogger(__name__)

_NO_RECONNECT = -2  # see the module docstring
_REFUSED = (4, 5)  # CONNACK: bad user name or password, not authorised
# gmqtt logs every refused reconnection at ERROR; the firmware link reports its own state.
_QUIET = logging.getLogger(__name__ + ".gmqtt")
_QUIET.setLevel(logging.CRITICAL)


class _NoLossWarnings(logging.Filter):
    """gmqtt's protocol warns (with a traceback) when a broker resets the connection, and on a
    write that races the loss; the firmware link reports its own state instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in ("[EXC: CONN LOST]", "[TRYING WRITE TO CLOSED SOCKET]")


_NO_LOSS_WARNINGS = _NoLossWarnings()


class GmqttTransport(MqttTransport):
    """One device's MQTT connection; every call is made on the loop that runs the fleet."""

    __slots__ = (
        "_client",
        "_events",
        "_task",
        "context",
        "host",
        "is_connected",
        "keepalive",
        "listener",
        "network_up",
        "password",
        "port",
        "telemetry",
        "username",
    )

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str | None,
        context: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
        keepalive: int = 60,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.context = context
        self.keepalive = keepalive
        self.listener: Any = None
        self.is_connected = False
        self.network_up = True  # False: the charger's own network is gone (set_network)
        self._client: gmqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._events: deque[tuple[Any, ...]] = deque()
        self.telemetry = 0  # telemetry messages handed to the broker connection

    def connect(self, client_id: str, will_topic: str, will_payload: bytes) -> None:
        """Start connecting; ``poll()`` reports the outcome."""
        if self._task is not None and not self._task.done():
            return  # an attempt is under way
        if not self.network_up:
            self._events.append(("failed", False))  # no Wi-Fi: nothing to connect over
            return
        if self._client is None:
            protocol_log = logging.getLogger("gmqtt.mqtt.protocol")
            if _NO_LOSS_WARNINGS not in protocol_log.filters:
                protocol_log.addFilter(_NO_LOSS_WARNINGS)
            will = gmqtt.Message(will_topic, will_payload, qos=1, retain=True)
            client = gmqtt.Client(client_id, clean_session=False, will_message=will, logger=_QUIET)
            client.set_auth_credentials(self.username, self.password)
            client.set_config({"reconnect_retries": _NO_RECONNECT})
            client.on_message = self._on_message
            client.on_disconnect = self._on_disconnect
            self._client = client
        self._task = asyncio.get_running_loop().create_task(self._connect(self._client))

    async def _connect(self, client: gmqtt.Client) -> None:
        try:
            context = self.context() if callable(self.context) else self.context
            await client.connect(
                self.host,
                self.port,
                ssl=context or False,
                keepalive=self.keepalive,
                version=MQTTv311,
            )
        except MQTTConnectError as exc:
            self._events.append(("failed", getattr(exc, "_code", None) in _REFUSED))
        except (TimeoutError, OSError, ValueError) as exc:  # ValueError: no usable key/cert
            log.debug("%s: cannot connect: %s", self.username, exc)
            self._events.append(("failed", False))
        else:
            self.is_connected = True
            self._events.append(("connected",))

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """PUBLISH; OSError once the connection is gone (the link then buffers)."""
        if not self.is_connected or self._client is None:
            raise OSError("not connected")
        self._client.publish(topic, payload, qos=qos, retain=retain)
        if topic.endswith("/telemetry"):
            self.telemetry += 1

    def subscribe(self, topic: str, qos: int) -> None:
        """SUBSCRIBE to one exact topic."""
        if not self.is_connected or self._client is None:
            raise OSError("not connected")
        self._client.subscribe(topic, qos=qos)

    def disconnect(self) -> None:
        """DISCONNECT (the broker discards the will); never raises."""
        client, self.is_connected = self._client, False
        if client is not None:
            asyncio.get_running_loop().create_task(_quietly(client.disconnect()))

    def set_network(self, up: bool) -> None:
        """Take the charger's own network (its Wi-Fi) away or give it back, for tests of
        offline operation against a broker that stays up: going down ends the connection
        (the link learns it at its next step) and every attempt fails until it is back."""
        self.network_up = up
        if not up and self.is_connected:
            self._cut()
            self._events.append(("lost",))

    def _cut(self) -> None:
        """Close the socket without DISCONNECT, as a lost Wi-Fi does: the broker then publishes
        the will (status offline), which a clean DISCONNECT would discard (MQTT-3.1.2-10)."""
        client, self.is_connected = self._client, False
        transport = getattr(getattr(client, "_connection", None), "_transport", None)
        if transport is None:  # not connected after all: nothing to cut
            return
        transport.abort()

    def has_events(self) -> bool:
        """Whether something waits for the master's next ``poll()``."""
        return bool(self._events)

    def poll(self) -> None:
        """Hand connection events and messages to the master, in arrival order."""
        events = self._events
        listener = self.listener
        while events:
            event = events.popleft()
            kind = event[0]
            if kind == "message":
                listener.on_message(event[1], event[2])
            elif kind == "connected":
                listener.on_connected()
            elif kind == "failed":
                listener.on_connect_failed(event[1])
            elif kind == "lost":
                listener.on_disconnected()

    # -- gmqtt callbacks, on the loop ---------------------------------------------------------
    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        self._events.append(("message", topic, payload))
        return 0  # PUBACK: the master takes every message it is given

    def _on_disconnect(self, _client: Any, _packet: Any, _exc: Any = None) -> None:
        if self.is_connected:
            self.is_connected = False
            self._events.append(("lost",))


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception as exc:  # a connection already gone has nothing to close
        log.debug("disconnect: %s", exc)
