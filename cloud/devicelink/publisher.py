"""Publishing device messages at QoS 1 and knowing the broker took them: the one mechanism
under every domain publisher (configuration, commands, authorization lists).

``ShortLivedPublisher`` opens a connection per batch, as the service account: an API process
needs no long-lived broker connection per gunicorn worker for an occasional change.
``WorkerPublisher`` publishes through a worker's long-lived ``ServiceConnection``. Both answer
False (logged) instead of raising when the broker cannot be reached: the caller has committed
its record first, and a worker re-sends what was not acknowledged.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt

from cloud.devicelink.mqtt import Endpoint, ServiceConnection

log = logging.getLogger(__name__)

Batch = list[tuple[str, bytes, bool]]  # (topic, payload, retain), published in this order


class ShortLivedPublisher:
    """A connection per batch, as the service account."""

    def __init__(self, endpoint: Endpoint, timeout: float = 3.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def _publish(self, batch: Batch, what: str) -> bool:
        connected = threading.Event()
        outcome: list[Any] = []
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{self.endpoint.username}-config-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set(
                ca_certs=self.endpoint.ca_file or None, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        client.connect_timeout = self.timeout

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            outcome.append(reason)
            connected.set()

        client.on_connect = on_connect
        try:
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30)
        except OSError as exc:
            log.warning("broker unreachable, %s not sent: %s", what, exc)
            return False
        client.loop_start()
        try:
            if not connected.wait(self.timeout) or outcome[0].is_failure:
                log.warning("broker refused or did not answer; %s not sent", what)
                return False
            infos = [
                client.publish(topic, payload, qos=1, retain=retain)
                for topic, payload, retain in batch
            ]
            for info in infos:
                info.wait_for_publish(self.timeout)
            return all(info.is_published() for info in infos)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("%s not sent: %s", what, exc)
            return False
        finally:
            client.disconnect()
            client.loop_stop()


class WorkerPublisher:
    """Publishes through a worker's long-lived connection."""

    def __init__(self, connection: ServiceConnection, timeout: float = 5.0) -> None:
        self.connection = connection
        self.timeout = timeout

    def _publish(self, batch: Batch, what: str) -> bool:
        if not self.connection.connected.is_set():
            return False

        try:
            infos = [
                self.connection.publish(topic, payload, qos=1, retain=retain)
                for topic, payload, retain in batch
            ]
            for info in infos:
                info.wait_for_publish(self.timeout)
            return all(info.is_published() for info in infos)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("%s failed: %s", what, exc)
            return False
