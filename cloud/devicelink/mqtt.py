"""A service connection to the broker (paho-mqtt), as Home Assistant's MQTT client does it:
resubscribe on every CONNACK, stop retrying when the credentials are refused, one bad handler
never kills the loop."""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

if TYPE_CHECKING:
    from cloud.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect."""

    host: str
    port: int
    tls: bool
    username: str
    password: str
    ca_file: str = ""

    @classmethod
    def from_url(cls, url: str, username: str, password: str, ca_file: str = "") -> Endpoint:
        """From ``mqtt://host:port`` or ``mqtts://host:port``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname, parts.port or (8883 if tls else 1883), tls, username, password, ca_file
        )


def service_endpoint(settings: Settings) -> Endpoint:
    """The broker endpoint of the cloud's service account (API publishers and workers)."""
    from cloud.devicelink.accounts import service_password

    return Endpoint.from_url(
        settings.broker_url,
        settings.broker_service_user,
        service_password(settings),
        settings.broker_tls_ca_file,
    )


def shared(topic: str, group: str, supported: bool) -> str:
    """``$share/group/topic`` where the broker splits shared subscriptions (MQTT 5 4.8.2;
    Mosquitto and EMQX also for 3.1.1 clients); the plain topic on amqtt, which cannot."""
    return f"$share/{group}/{topic}" if supported else topic


class ServiceConnection:
    """One paho client with its subscriptions, reconnecting on its own."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]],
        on_message: Handler,
        manual_ack: bool = False,
        clean_session: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.subscriptions = list(subscriptions)
        self.connected = threading.Event()
        self.refused = threading.Event()
        self._on_message = on_message
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            manual_ack=manual_ack,
        )
        client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set(ca_certs=endpoint.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # paho's default of 20 in-flight messages is far below a worker's batch.
        client.max_inflight_messages_set(1000)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._dispatch
        self.client = client

    def start(self) -> None:
        """Connect in the background; paho reconnects with back-off after drops."""
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a message received in manual-ack mode (PUBACK for QoS 1)."""
        self.client.ack(mid, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        """Publish; returns paho's MQTTMessageInfo."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def _connected(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%s refused %s: %s",
                self.endpoint.host,
                self.endpoint.port,
                self.endpoint.username,
                reason,
            )
            if reason.value in (4, 5, 134, 135):  # bad credentials / not authorised
                # Retrying with the same refused credentials only hammers the broker.
                self.refused.set()
                client.disconnect()
            return
        # Subscriptions are restated on every CONNACK: a broker restart may have lost them.
        if self.subscriptions:
            client.subscribe(self.subscriptions)
        self.connected.set()
        log.info(
            "connected to %s:%s as %s",
            self.endpoint.host,
            self.endpoint.port,
            self.endpoint.username,
        )

    def _disconnected(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _properties: Any
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("lost the broker (%s); reconnecting", reason)

    def _dispatch(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message)
        except Exception:
            log.exception("handler failed on %s", message.topic)


def end_session(endpoint: Endpoint, client_id: str, timeout: float = 10.0) -> None:
    """Discard a persistent session at the broker: connect once with clean session, leave.

    A stopped worker's session stays a member of its shared subscription, and Mosquitto keeps
    queueing its share of the traffic for it. Workers that are gone for good (scaled down) must
    be forgotten this way, or that share waits until a worker with that client id returns.
    """
    done = threading.Event()
    outcome: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set(ca_certs=endpoint.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)

    def connected(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome.append(reason)
        done.set()

    client.on_connect = connected
    client.connect(endpoint.host, endpoint.port, keepalive=10)
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"no CONNACK from {endpoint.host}:{endpoint.port}")
        if outcome[0].is_failure:
            raise ConnectionError(f"broker refused {endpoint.username}: {outcome[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
