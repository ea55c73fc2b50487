"""``Link``: the cloud's one MQTT client (gmqtt, on an asyncio loop), as Home Assistant's MQTT
client and aiomqtt do it.

* Connects with exponential back-off and jitter, the first time too (gmqtt reconnects by
  itself only after a first success; the jittered delay of its reconnects is set here on every
  loss), MQTT 3.1.1, TLS when the endpoint says so, clean or persistent session.
* A subscription registry (``subscriptions.Subscriptions``), restated on every CONNACK: a broker
  that restarted without persistence, or a clean session, has lost it.
* Stops trying when the broker refuses the credentials (CONNACK 4 or 5): ``refused`` is set.
* One failing handler never stops the loop: its topic and a truncated payload are logged,
  and it is counted (``failures``, ``ampfleet_link_handler_failures_total``).
* ``publish`` at QoS 1 returns a future resolved by the PUBACK (keyed by packet id; resolving
  twice is harmless; failed with ``NotConnectedError`` when a clean session lost it).
* ``manual_ack``: a QoS 1 message is acknowledged only when its owner calls ``ack`` — once the
  work it carries is committed. Packet ids are valid only on the connection that delivered
  them: every CONNACK starts a new ``generation``, and an ack of an older one is dropped (the
  broker delivers that message again).

Callbacks and handlers run on the loop; ``connected`` and ``refused`` are threading events so
that other threads (workers, tests, health checks) can read them. ``threaded.ThreadedLink`` is
the facade for threaded callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from prometheus_client import Counter

from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.errors import NotConnectedError
from cloud.devicelink.subscriptions import Handler, Message, Subscriptions
from cloud.devicelink.wire import Wire

log = logging.getLogger(__name__)

REFUSED = (4, 5)  # MQTT 3.1.1 CONNACK: bad user name or password, not authorised (3.2.2.3)
KEEPALIVE = 30
CHUNK = 200  # filters per SUBSCRIBE when a CONNACK restates many
EXCERPT = 64  # payload bytes a handler failure logs

HANDLER_FAILURES = Counter(
    "ampfleet_link_handler_failures_total",
    "Messages whose handler raised (logged with topic and payload excerpt; the loop goes on).",
)


def backoff(attempt: int, first: float, most: float) -> float:
    """The delay before retry ``attempt`` (0-based): exponential, capped, with "equal jitter"
    (half fixed, half random) so that many clients cut off together do not return together."""
    ceiling = min(most, first * 2.0**attempt)
    jitter: float = random.uniform(0, ceiling / 2)  # noqa: S311 (not cryptographic)
    return ceiling / 2 + jitter


class Link:
    """One MQTT connection of a cloud service, with its subscriptions."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        clean_session: bool = True,
        manual_ack: bool = False,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        coalesce_writes: bool = False,
        on_flush: Callable[[int], None] | None = None,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.clean_session = clean_session
        self.manual_ack = manual_ack
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.generation = 0  # CONNACKs so far
        self.failures = 0  # handler failures
        self.last_error = ""  # why the latest connection attempt failed
        self.paused = False  # reading stopped by pause_reading (a new connection reads)
        self.subscriptions = Subscriptions()
        self._coalesce = coalesce_writes
        self._on_flush = on_flush
        self._on_connected = on_connected
        self._pubacks: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, tuple[list[str], asyncio.Future[list[int]]]] = {}
        self._losses = 0  # connections lost since the last CONNACK (reconnect back-off)
        self._closing = False
        # ``will``: (topic, payload) the broker publishes, QoS 1 and retained, when this
        # connection dies without a DISCONNECT (MQTT-3.1.2-8); the OCPP bridge's says that its
        # chargers are gone with it.
        will_message = gmqtt.Message(will[0], will[1], qos=1, retain=True) if will else None
        self._client = gmqtt.Client(
            client_id,
            clean_session=clean_session,
            optimistic_acknowledgement=False,
            will_message=will_message,
        )
        self._client.set_auth_credentials(endpoint.username, endpoint.password)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": first_delay})
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_qos0
        self._wire = Wire(self._client, self._on_qos1, self._on_puback, self._on_connack_code)

    # -- life cycle -----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """Whether the connection is up (read on the loop)."""
        return self._wire.connected

    async def run(self, stopping: asyncio.Event, attempts: int | None = None) -> bool:
        """Connect, retrying with back-off until connected, refused, ``stopping`` or out of
        ``attempts``; whether connected. gmqtt reconnects by itself afterwards."""
        attempt = 0
        while not stopping.is_set() and not self.refused.is_set():
            try:
                await self._client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=self.endpoint.ssl_context(),
                    keepalive=KEEPALIVE,
                    version=MQTTv311,
                )
                return True
            except gmqtt.mqtt.handler.MQTTConnectError as exc:
                self.last_error = f"refused: {exc}"
                if getattr(exc, "_code", None) in REFUSED:
                    self._refuse(exc)
                    return False
                log.warning("broker %s refused the connection (%s)", self.endpoint.where, exc)
            except OSError as exc:
                self.last_error = f"unreachable: {exc}"
                log.warning("broker %s unreachable (%s)", self.endpoint.where, exc)
            attempt += 1
            if attempts is not None and attempt >= attempts:
                return False
            delay = backoff(attempt - 1, self.first_delay, self.max_delay)
            log.info("retrying %s in %.1f s", self.endpoint.where, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
        return False

    async def close(self) -> None:
        """Disconnect (a persistent session stays at the broker, which queues for it)."""
        self._closing = True
        self.connected.clear()
        self._wire.flush()
        try:
            await self._client.disconnect()
        except Exception as exc:  # already gone: nothing left to close cleanly
            log.debug("disconnect: %s", exc)
        self._wire.stop_reconnecting()  # lost before (the broker stopped first): one is pending
        self._fail_pending("the link was closed")

    # -- subscriptions ------------------------------------------------------------------------
    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1
    ) -> asyncio.Future[list[int]] | None:
        """Register ``handler`` for ``topic_filter`` (kept across reconnects); when connected,
        subscribe now: the future of the SUBACK's return codes (0x80 = refused)."""
        self.subscriptions.add(topic_filter, qos, handler)
        if not self.is_connected:
            return None
        return self._send_subscribe([(topic_filter, qos)])

    def subscribe_many(self, filters: list[str], handler: Handler, qos: int = 1) -> None:
        """Register one handler for many filters, sent in SUBSCRIBEs of ``CHUNK``."""
        for topic_filter in filters:
            self.subscriptions.add(topic_filter, qos, handler)
        if self.is_connected:
            for start in range(0, len(filters), CHUNK):
                self._send_subscribe([(f, qos) for f in filters[start : start + CHUNK]])

    def unsubscribe(self, filters: list[str]) -> None:
        """Forget ``filters`` and, when connected, unsubscribe from them."""
        for topic_filter in filters:
            self.subscriptions.remove(topic_filter)
        if self.is_connected:
            self._wire.unsubscribe(filters)

    def _send_subscribe(self, filters: list[tuple[str, int]]) -> asyncio.Future[list[int]]:
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        mid = self._wire.subscribe(filters)
        self._subacks[mid] = ([f for f, _ in filters], future)
        return future

    # -- publishing ------------------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Publish; a future resolved when the broker has it (the PUBACK at QoS 1, at once at
        QoS 0), failed with ``NotConnectedError`` when there is no connection or it was lost with
        a clean session before the PUBACK."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.is_connected:
            future.set_exception(NotConnectedError(f"not connected to {self.endpoint.where}"))
            return future
        mid = self._wire.publish(topic, payload, qos, retain)
        if mid is None:
            future.set_result(None)
        else:
            earlier = self._pubacks.pop(mid, None)
            if earlier is not None and not earlier.done():  # an id reused: that one was lost
                earlier.set_exception(NotConnectedError("acknowledgement lost"))
            self._pubacks[mid] = future
        return future

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Publish without waiting for (or tracking) the acknowledgement; False while
        disconnected. For high-rate senders such as the OCPP bridge's telemetry."""
        if not self.is_connected:
            return False
        self._wire.publish(topic, payload, qos, retain)
        return True

    # -- acknowledgements ------------------------------------------------------------------------
    def ack(self, mid: int | None, generation: int) -> bool:
        """Acknowledge a QoS 1 message (manual_ack) if it came on the current connection;
        whether a PUBACK went out (otherwise the broker delivers the message again)."""
        if mid is None or generation != self.generation or not self.connected.is_set():
            return False
        self._wire.puback(mid)
        return True

    def pause_reading(self, paused: bool) -> None:
        """Back-pressure: stop (or resume) reading while the owner holds as much as it may."""
        self.paused = paused
        self._wire.pause_reading(paused)

    # -- gmqtt callbacks, on the loop -------------------------------------------------------------
    def _failed(self, message: Message) -> None:
        # Called inside the handler's ``except``: log.exception has its traceback.
        self.failures += 1
        HANDLER_FAILURES.inc()
        log.exception(
            "handler failed on %s payload=%r", message.topic[:200], message.payload[:EXCERPT]
        )

    def _on_qos1(self, mid: int, payload: bytes, topic: Any, properties: dict[str, Any]) -> None:
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")
        generation = self.generation
        message = Message(topic, payload, 1, bool(properties.get("retain")), mid, generation)
        self.subscriptions.dispatch(message, self._failed)
        if not self.manual_ack:
            self.ack(mid, generation)

    def _on_qos0(
        self, _client: Any, topic: Any, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")
        message = Message(
            topic, payload, qos, bool(properties.get("retain")), None, self.generation
        )
        self.subscriptions.dispatch(message, self._failed)
        return 0

    def _on_puback(self, mid: int) -> None:
        future = self._pubacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _on_subscribe(
        self, _client: Any, mid: int, codes: tuple[int, ...], _properties: Any
    ) -> None:
        pending = self._subacks.pop(mid, None)
        if pending is None:
            return
        filters, future = pending
        for topic_filter, code in zip(filters, codes, strict=False):
            if code >= 0x80:
                log.error("broker %s refused subscription %s", self.endpoint.where, topic_filter)
        if not future.done():
            future.set_result(list(codes))

    def _on_connack_code(self, code: int) -> None:
        if code in REFUSED:
            self._refuse(f"CONNACK {code}")

    def _refuse(self, why: object) -> None:
        if self.refused.is_set():
            return
        log.error("broker %s refused %s: %s", self.endpoint.where, self.endpoint.username, why)
        self.refused.set()
        # Retrying refused credentials only hammers the broker.
        self._client.stop_reconnect()

    def _on_connect(self, _client: Any, session_present: int, _rc: Any, _props: Any) -> None:
        self.generation += 1
        self._losses = 0
        self.paused = False
        if not session_present:
            # Clean session: what was in flight is gone and will not be acknowledged.
            self._fail_pending("the broker lost the session before acknowledging")
        if self._coalesce:
            self._wire.coalesce(self._on_flush)
        # Restated on every CONNACK: a broker that lost its state has lost the subscriptions.
        filters = self.subscriptions.filters()
        for start in range(0, len(filters), CHUNK):
            self._send_subscribe(filters[start : start + CHUNK])
        self.connected.set()
        log.info("connected to %s as %s", self.endpoint.where, self.endpoint.username)
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:  # the owner's bookkeeping must not break the connection
                log.exception("on_connected failed")

    def _on_disconnect(self, _client: Any, _packet: Any, exc: Any = None) -> None:
        self.connected.clear()
        if self._closing:
            log.info("disconnected from %s", self.endpoint.where)
            return
        # gmqtt reconnects after its reconnect_delay, read when its retry starts: jitter it.
        delay = backoff(self._losses, self.first_delay, self.max_delay)
        self._losses += 1
        self._client.reconnect_delay = delay
        log.warning("lost the broker (%s); reconnecting in %.1f s", exc or "disconnected", delay)

    def _fail_pending(self, why: str) -> None:
        pubacks, self._pubacks = self._pubacks, {}
        for future in pubacks.values():
            if not future.done():
                future.set_exception(NotConnectedError(why))
        subacks, self._subacks = self._subacks, {}
        for _filters, suback in subacks.values():
            if not suback.done():
                suback.cancel()
