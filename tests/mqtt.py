"""A paho-mqtt client driven step by step, for tests: connect, subscribe, publish, expect.

Every call waits for the broker's answer (CONNACK, SUBACK, PUBACK) and returns what it said,
so a test reads like the conversation it checks. The client never reconnects by itself: a
disconnection is an observable event (``wait_disconnected``).
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 5.0
QUIET = 0.3  # how long "nothing arrives" is watched after the sentinel that did


@dataclass(frozen=True)
class Message:
    """A delivered message."""

    topic: str
    payload: bytes


class MqttError(AssertionError):
    """The broker did not answer as a step expected."""


class Mqtt:
    """One MQTT 3.1.1 connection."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        *,
        will: tuple[str, bytes] | None = None,
        ca_file: str | None = None,
        clean_session: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else (username or ""),
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        if ca_file is not None:
            self.client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
        # Never reconnect behind the test's back.
        self.client.reconnect_delay_set(min_delay=3600, max_delay=3600)
        self.messages: queue.Queue[Message] = queue.Queue()
        self._cond = threading.Condition()
        self._connack: ReasonCode | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._pubacks: set[int] = set()
        self.disconnected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # callbacks (paho's thread)
    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._connack = reason
            self._cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.disconnected.set()
        with self._cond:
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = list(reasons)
            self._cond.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        with self._cond:
            self._pubacks.add(mid)
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(Message(message.topic, bytes(message.payload)))

    def _wait(self, ready: Any, what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MqttError(f"no {what} within {timeout}s")
                self._cond.wait(left)

    # steps
    def connect(self) -> ReasonCode:
        """Connect; the CONNACK's reason (``.is_failure`` when refused)."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise MqttError(f"cannot reach the broker: {exc}") from exc
        self.client.loop_start()
        self._wait(lambda: self._connack is not None or self.disconnected.is_set(), "CONNACK")
        if self._connack is None:
            raise MqttError("the broker closed the connection without a CONNACK")
        return self._connack

    def connected(self) -> Mqtt:
        """Connect, asserting success; return self."""
        reason = self.connect()
        if reason.is_failure:
            raise MqttError(f"CONNECT refused: {reason}")
        return self

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        """Subscribe; the SUBACK's reason for this filter (0x80 failure when denied)."""
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"SUBSCRIBE not sent: {result}")
        self._wait(lambda: mid in self._subacks or self.disconnected.is_set(), "SUBACK")
        if mid not in self._subacks:
            raise MqttError(f"disconnected instead of a SUBACK for {topic!r}")
        return self._subacks[mid][0]

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait for the PUBACK (QoS 1), which says nothing of who may read it."""
        info = self.client.publish(topic, payload, qos=qos)
        if qos:
            self._wait(lambda: info.mid in self._pubacks or self.disconnected.is_set(), "PUBACK")

    def expect(self, timeout: float = TIMEOUT) -> Message:
        """The next delivered message (MqttError when none comes)."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise MqttError(f"no message within {timeout}s") from None

    def drain(self, quiet: float = QUIET) -> list[Message]:
        """Every message that arrives until ``quiet`` seconds pass without one."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def wait_disconnected(self, timeout: float = TIMEOUT) -> bool:
        """Whether the broker closed the connection within ``timeout``."""
        return self.disconnected.wait(timeout)

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT, as a power cut would: the broker then
        publishes the will (MQTT-3.1.2-8)."""
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        self.wait_disconnected()

    def close(self) -> None:
        """Disconnect cleanly (if still connected) and stop the network thread."""
        if not self.disconnected.is_set():
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Mqtt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
