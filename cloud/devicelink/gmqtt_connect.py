"""The first connection of a gmqtt service client (the ingest worker, the OCPP bridge).

gmqtt reconnects by itself once a connection has been made, but not the first time: this loop
retries with exponential back-off until connected, refused for good, or told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading

import gmqtt
from gmqtt.mqtt.constants import MQTTv311

from cloud.devicelink.mqtt import Endpoint

log = logging.getLogger(__name__)

REFUSED = (4, 5)  # MQTT 3.1.1 CONNACK: bad user name or password, not authorised


async def connect(
    client: gmqtt.Client,
    endpoint: Endpoint,
    stopping: asyncio.Event,
    refused: threading.Event,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Connect ``client`` to ``endpoint`` (MQTT 3.1.1, TLS when the endpoint says so); on bad
    credentials set ``refused`` and give up, since retrying them only hammers the broker."""
    delay = first_delay
    context: ssl.SSLContext | bool = False
    if endpoint.tls:
        context = ssl.create_default_context(cafile=endpoint.ca_file or None)
    while not stopping.is_set():
        try:
            await client.connect(
                endpoint.host, endpoint.port, ssl=context, keepalive=30, version=MQTTv311
            )
            return
        except gmqtt.mqtt.handler.MQTTConnectError as exc:
            if getattr(exc, "_code", None) in REFUSED:
                log.error("broker refused %s: %s", endpoint.username, exc)
                refused.set()
                return
            log.warning("broker refused the connection (%s); retrying", exc)
        except OSError as exc:
            log.warning(
                "broker %s:%s unreachable (%s); retrying in %.0f s",
                endpoint.host,
                endpoint.port,
                exc,
                delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, max_delay)
