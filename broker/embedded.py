"""The embedded MQTT broker: amqtt with the device plugins, for ``ampfleet up`` and laptops.

``run(settings)`` serves MQTT on the port of ``settings.broker_url`` (TLS when its scheme is
``mqtts``) and, when ``broker_tls_port`` is set, a second, TLS listener; when
``broker_mtls_port`` is set, a mutual-TLS listener where devices authenticate with a
certificate of the platform's PKI (broker.mtls for the handshake, broker.certauth for the
CONNECT). Devices authenticate against the records database (broker.registry, password); a
watchdog re-checks the connected devices every ``RECHECK_INTERVAL`` seconds and disconnects
those whose credential was revoked or rotated, whose certificate was revoked or expired, or
whose device was suspended, decommissioned or deleted; it refreshes each device's quarantine
flag (broker.acl), and the mutual-TLS context when the CRL changed, so the API never has to
reach the broker.

amqtt 0.12.1 speaks MQTT 3.1.1 only and has no ``$share``. It also touches the session
registry before it authenticates a CONNECT: a client that merely knows a device id could make
it forget the device's session (clean session) or take the connected device over (persistent
session). ``DeviceBroker`` authenticates first.

No acknowledged sample is lost (docs/device-link.md, "Delivery guarantee"):

* outgoing QoS 1 messages stay in a persistent session until the subscriber acknowledges them,
  and are resent when it comes back (broker.amqtt_handler; MQTT 3.1.1 §4.4);
* with a ``Durability`` (what ``ampfleet broker run`` uses), devices are refused with CONNACK 3
  "server unavailable" until every channel of ``Durability.channels`` has a persistent
  subscription of the cloud's service account — a sample is never acknowledged that no durable
  subscriber would get; on stop, the broker refuses and disconnects devices, lets the connected
  workers take what is queued for them (at most ``drain_timeout``), and writes the persistent
  sessions with what is left to ``broker-sessions.db`` (broker.session_store), read back on
  the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, WriterAdapter
from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker import certauth, mtls
from broker.acl import Action, allowed
from broker.amqtt_handler import DurableHandler
from broker.amqtt_plugins import (
    IDENTITY,
    PEER_CERTIFICATE,
    QUARANTINED,
    session_identity,
    session_quarantined,
)
from broker.certauth import CertificateIdentity, CertificateRegistry
from broker.registry import DeviceRegistry, Identity
from broker.session_store import SessionStore, StoredMessage, StoredSession
from cloud.db import Database
from cloud.devicelink.accounts import bridge_password, service_password
from cloud.identity.passwords import SecretHasher
from cloud.settings import Settings, SettingsError
from firmware.core import contract

log = logging.getLogger(__name__)

RECHECK_INTERVAL = 1.5  # seconds between re-checks of connected devices
# Persistent (clean session 0) sessions of devices that stay away longer are dropped, so a
# fleet that comes and goes does not grow the broker's memory for ever.
SESSION_EXPIRY = 24 * 3600
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# The uplink channels the cloud's workers consume with persistent sessions (ingest, status,
# charging, config): a device may publish only once each has one (``Durability``).
DURABLE_CHANNELS = (
    contract.TELEMETRY,
    contract.STATUS,
    contract.EVENTS,
    contract.CONFIG_REPORTED,
    contract.CMD_RESULT,
)
# Seconds a stopping broker waits for the workers to take their queues: with the save and the
# shutdown, a stop fits in the 10 s `ampfleet up` gives the broker before SIGKILL.
DRAIN_TIMEOUT = 7.0
SESSIONS_FILE = "broker-sessions.db"
_PROBE_DEVICE = "probe"  # a device id to test topic filters with
_UNAVAILABLE = "server unavailable (devices wait for the workers)"
MTLS_LISTENER = "mtls"  # the name of the mutual-TLS listener in amqtt's configuration


@dataclasses.dataclass(frozen=True)
class Durability:
    """What makes the embedded broker keep acknowledged messages across starts and stops."""

    channels: tuple[str, ...] = DURABLE_CHANNELS
    store: SessionStore | None = None
    drain_timeout: float = DRAIN_TIMEOUT

    @classmethod
    def for_settings(cls, settings: Settings) -> Durability:
        """The durability of ``ampfleet broker run``: sessions kept in the data directory."""
        return cls(store=SessionStore(settings.data_path / SESSIONS_FILE))


def listen_address(broker_url: str) -> tuple[str, int, bool]:
    """(host, port, tls) the embedded broker listens on, from ``broker_url``."""
    parts = urlsplit(broker_url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise SettingsError(
            "AMPFLEET_BROKER_URL: expected mqtt://host:port or mqtts://host:port, "
            f"not {broker_url!r}"
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise SettingsError(f"AMPFLEET_BROKER_URL: {exc}") from exc
    return parts.hostname, port, parts.scheme == "mqtts"


def broker_config(
    settings: Settings,
    registry: DeviceRegistry,
    certificates: CertificateRegistry | None = None,
) -> dict[str, Any]:
    """amqtt's configuration: our listeners and our two plugins, and nothing else."""
    host, port, tls = listen_address(settings.broker_url)
    cert, key = settings.broker_tls_cert_file, settings.broker_tls_key_file
    if (tls or settings.broker_tls_port or settings.broker_mtls_port) and not (cert and key):
        raise SettingsError(
            "AMPFLEET_BROKER_TLS_CERT_FILE and AMPFLEET_BROKER_TLS_KEY_FILE are needed for the "
            "broker's TLS listener"
        )
    if settings.broker_mtls_port and certificates is None:
        raise ValueError("the mutual-TLS listener needs a CertificateRegistry")
    bind = f"[{host}]" if ":" in host else host
    tls_options = {"ssl": True, "certfile": cert, "keyfile": key}
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{bind}:{port}", **(tls_options if tls else {})}
    }
    if settings.broker_tls_port:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{bind}:{settings.broker_tls_port}",
            **tls_options,
        }
    if settings.broker_mtls_port:
        # TLS, but not with the context amqtt would make from this: DeviceBroker upgrades each
        # connection itself with the PKI's (broker.mtls).
        listeners[MTLS_LISTENER] = {
            "type": "tcp",
            "bind": f"{bind}:{settings.broker_mtls_port}",
            **tls_options,
        }
    return {
        "listeners": listeners,
        "session_expiry_interval": SESSION_EXPIRY,
        # Exactly these: amqtt's defaults would add anonymous access and $SYS topics.
        "plugins": {
            "broker.amqtt_plugins.DeviceAuthPlugin": {
                "registry": registry,
                "certificates": certificates,
                "device_passwords": settings.device_passwords,
            },
            "broker.amqtt_plugins.DeviceTopicPlugin": {},
        },
    }


class _Subscriptions(dict[str, list[tuple[Session, int]]]):
    """amqtt's subscription table, iterated over a snapshot.

    amqtt 0.12.1 walks this dict in ``_run_broadcast`` (and on CONNECT) while awaiting the topic
    check for each subscriber; a client disconnecting meanwhile deletes its filters, and the
    resumed loop fails with "dictionary changed size during iteration": the message being
    broadcast is lost. Iterating a copy makes a concurrent (un)subscribe harmless.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, list[tuple[Session, int]]]]:  # type: ignore[override]
        return list(super().items())


class DeviceBroker(Broker):
    """amqtt's broker, authenticating a CONNECT before it may touch any session.

    amqtt 0.12.1 (``Broker._initialize_client_session``) deletes the stored session of the
    CONNECT's client id, or copies the new credentials into it, and only then authenticates.
    A wrong password with a device's client id would thus detach the device's live session
    (it would no longer receive commands, nor be found to disconnect on revocation) or take
    it over. MQTT-3.1.4-2 lets an *authenticated* client take over its own session only.
    """

    def __init__(
        self,
        *args: Any,
        durable_channels: tuple[str, ...] = (),
        trust: mtls.TrustStore | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _Subscriptions(self._subscriptions)  # type: ignore[has-type]
        self.durable_channels = durable_channels
        self.trust = trust  # the mutual-TLS listener's context, when there is one
        self.closing = False  # stopping: devices are refused
        self._admitting = not durable_channels
        self._refusals = 0

    def missing_channels(self) -> list[str]:
        """The durable channels no persistent session of the service account subscribes to."""
        return [
            channel
            for channel in self.durable_channels
            if not self._durably_subscribed(contract.topic(_PROBE_DEVICE, channel))
        ]

    def _durably_subscribed(self, topic: str) -> bool:
        for topic_filter, holders in self._subscriptions.items():
            if not self._matches(topic, topic_filter):
                continue
            for holder, _qos in holders:
                identity = session_identity(holder)
                if not holder.clean_session and identity is not None and identity.is_service:
                    return True
        return False

    def admits_devices(self) -> bool:
        """Whether a device (or the OCPP bridge) may connect now.

        Not before every durable channel has its persistent subscriber: amqtt acknowledges a
        PUBLISH nobody subscribes to and drops it. Once open, the gate stays open: a worker
        that goes away keeps its session, and the broker queues for it.
        """
        if self.closing:
            return False
        if not self._admitting:
            missing = self.missing_channels()
            if missing:
                return False
            self._admitting = True
            log.info("the workers' durable subscriptions are in place: admitting devices")
        return True

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        """The mutual-TLS listener accepts TCP and upgrades each connection itself (with the
        context of the CRL in force then); the others are amqtt's."""
        if listener_name != MTLS_LISTENER:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        if self.trust is None:
            raise ValueError("the mutual-TLS listener needs a TrustStore")
        return await asyncio.start_server(
            functools.partial(self._mtls_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
        )

    async def _mtls_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        assert self.trust is not None  # checked when the listener started
        certificate = await mtls.handshake(writer, self.trust.context)
        if certificate is None:
            return
        try:
            await self._client_connected(
                listener_name,
                StreamReaderAdapter(reader),
                mtls.CertifiedWriter(writer, certificate),
            )
        except OSError as exc:  # the client reset the TLS connection: what a dropped one is
            log.info("connection from %s lost: %s", writer.get_extra_info("peername"), exc)

    async def _refuse_unavailable(
        self,
        handler: BrokerProtocolHandler,
        session: Session,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        where: str,
    ) -> None:
        """CONNACK 3, server unavailable (MQTT 3.1.1 table 3.1): devices retry with back-off."""
        self._refusals += 1
        if self._refusals == 1 or self._refusals % 100 == 0:
            why = "stopping" if self.closing else f"waiting for {self.missing_channels()}"
            log.info("refusing devices for now (%s): %d refused so far", why, self._refusals)
        session.parent = 0
        handler.attach(session, reader, writer)
        await handler._send_packet(ConnackPacket.build(0, SERVER_UNAVAILABLE))
        await _close(writer)
        raise MQTTError(f"{where}: {_UNAVAILABLE}")

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await DurableHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await _close(writer)
            raise
        if isinstance(writer, mtls.CertifiedWriter):
            # Decided by the certificate alone (broker.amqtt_plugins).
            session.attributes[PEER_CERTIFICATE] = writer.peer_certificate
        if not await self._authenticate(session, self.listeners_config["default"]):
            session.parent = 0
            handler.attach(session, reader, writer)
            # CONNACK return code 5, not authorized (MQTT 3.1.1 table 3.1), then close.
            await handler.mqtt_connack_authorize(False)
            await _close(writer)
            raise MQTTError(f"{remote_address}:{remote_port}: not authorized")
        identity = session_identity(session)
        if (identity is None or not identity.is_service) and not self.admits_devices():
            await self._refuse_unavailable(
                handler, session, reader, writer, f"{remote_address}:{remote_port}"
            )
        # The rest is amqtt's own bookkeeping (amqtt/broker.py 0.12.1), now behind the check.
        if session.clean_session:
            if session.client_id:
                previous = self._sessions.get(session.client_id)
                if previous is not None and previous[0].transitions.is_connected():
                    # MQTT-3.1.4-2: the new connection takes over. amqtt would only forget the
                    # old one, which stayed connected out of the watchdog's sight.
                    await previous[1].handle_connection_closed()
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive"):
                setattr(existing, name, getattr(session, name))
            existing.will_retain = session.will_retain
            existing.username, existing.password = session.username, session.password
            # Who is connecting now (a restored session, or one whose credential rotated), with
            # what (amqtt authenticates the kept session once more), and its quarantine.
            for key in (IDENTITY, PEER_CERTIFICATE, QUARANTINED):
                if key in session.attributes:
                    existing.attributes[key] = session.attributes[key]
                else:
                    existing.attributes.pop(key, None)
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Retained messages for a subscription only if ``session`` holds it.

        amqtt 0.12.1 calls this on every CONNECT for *every* filter any session holds
        (``Broker.client_connected``), so a device connecting received the retained messages of
        other devices' subscriptions — their desired configuration, for one. MQTT-3.3.1-6
        sends retained messages to a client only for its own new subscription. amqtt does not
        ask the topic plugins here: a quarantined device (broker.acl) gets none.
        """
        if session_quarantined(session):
            return
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if any(holder is session for holder, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Send what was queued for ``session`` while it was away, without waiting for PUBACKs.

        amqtt 0.12.1 awaits every acknowledgement here, before it reads the client's next
        SUBSCRIBE; with no PUBACK time-out (broker.amqtt_handler) a slow subscriber would
        stall its own connection. The broadcast loop reaps these tasks like its own. They are
        sent as what they are, not as retained messages (MQTT-3.3.1-9: RETAIN 0 on delivery to
        an existing subscription). A quarantined device's queue waits (nothing new joins it:
        the topic plugin refuses it every delivery) until it is approved and reconnects.
        """
        handler = self._get_handler(session)
        if handler is None or session_quarantined(session):
            return
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            self._tasks_queue.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)
                )
            )

    def pending(self) -> int:
        """Messages not yet acknowledged by the connected persistent sessions (and not yet
        broadcast): what a stopping broker waits for."""
        count = self._broadcast_queue.qsize()
        for session, _handler in self._sessions.values():
            if not session.clean_session and session.transitions.is_connected():
                count += session.retained_messages.qsize() + len(session.inflight_out)
        return count

    async def disconnect_devices(self) -> None:
        """Close every connection but the cloud's services' (their wills are published)."""
        for session, handler in list(self._sessions.values()):
            identity = session_identity(session)
            if session.transitions.is_connected() and (identity is None or not identity.is_service):
                await handler.handle_connection_closed()

    def stored_sessions(self) -> list[StoredSession]:
        """The persistent sessions, with what they have not acknowledged, to save on stop."""
        stored = []
        for client_id, (session, _handler) in self._sessions.items():
            identity = session_identity(session)
            if session.clean_session or identity is None:
                continue
            subscriptions = tuple(
                (topic_filter, qos)
                for topic_filter, holders in self._subscriptions.items()
                for holder, qos in holders
                if holder is session
            )
            messages = [
                StoredMessage(m.topic, bytes(m.data or b""), m.qos or QOS_1)
                for m in session.inflight_out.values()
            ]
            while not session.retained_messages.empty():
                queued = session.retained_messages.get_nowait()
                messages.append(
                    StoredMessage(queued.topic, bytes(queued.data or b""), queued.qos or QOS_1)
                )
            stored.append(StoredSession(client_id, identity, subscriptions, tuple(messages)))
        return stored

    def restore(self, sessions: list[StoredSession]) -> int:
        """Bring saved sessions back, offline, with their queues; the number of messages."""
        restored = 0
        for stored in sessions:
            handler, session = self.create_offline_session(stored.client_id)
            session.clean_session = False
            session.username = stored.identity.username
            session.attributes[IDENTITY] = stored.identity
            self._sessions[stored.client_id] = (session, handler)
            for topic_filter, qos in stored.subscriptions:
                self._subscriptions.setdefault(topic_filter, []).append((session, qos))
            for message in stored.messages:
                qos = message.qos if message.qos in (QOS_1, QOS_2) else QOS_1
                session.retained_messages.put_nowait(
                    RetainedApplicationMessage(None, message.topic, message.payload, qos)
                )
                restored += 1
        return restored

    async def drain(self, timeout: float) -> int:
        """Stop admitting devices, disconnect them, and wait (at most ``timeout`` s) until the
        connected persistent sessions acknowledged what is queued for them; what is left."""
        self.closing = True
        await self.disconnect_devices()
        deadline = time.monotonic() + timeout
        quiet = 0
        # Two quiet looks in a row: a message taken off the broadcast queue is in no session's
        # queue for the moment the broadcast loop needs to route it.
        while quiet < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            quiet = quiet + 1 if self.pending() == 0 else 0
        return self.pending()


async def _close(writer: WriterAdapter) -> None:
    """Close a refused client's connection; one that the client reset first is closed too."""
    with contextlib.suppress(OSError):  # ConnectionResetError, ssl.SSLError (a TLS client)
        await writer.close()


def _quiet_refusals(record: logging.LogRecord) -> bool:
    """Drop amqtt's warning for a device refused while the broker waits for the workers."""
    return _UNAVAILABLE not in record.getMessage()


def make_registry(settings: Settings, database: Database) -> DeviceRegistry:
    """The registry the plugins check against, from settings."""
    return DeviceRegistry(
        database,
        SecretHasher(settings.password_kdf),
        settings.broker_service_user,
        service_password(settings),
        bridge_user=settings.broker_bridge_user,
        bridge_password=bridge_password(settings),
    )


async def run(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[Broker, DeviceRegistry], None] | None = None,
    durability: Durability | None = None,
) -> None:
    """Serve MQTT until ``stop`` is set (or for ever); ``ready`` is called once listening.

    With ``durability``, devices wait for the workers' durable subscriptions, and persistent
    sessions outlive the broker (see the module's docstring).
    """
    if settings.log_level != "DEBUG":
        # amqtt logs every connection and packet at INFO: too much for a fleet (and its
        # session state machine, ``transitions``, every state change).
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
    # amqtt warns of every refused CONNECT; ours are counted in one line (admits_devices).
    logging.getLogger("amqtt.broker").addFilter(_quiet_refusals)
    for path in (settings.broker_tls_cert_file, settings.broker_tls_key_file):
        if path and not Path(path).is_file():
            raise SettingsError(f"broker TLS file {path} does not exist")
    database = Database(settings.database_url)
    registry = make_registry(settings, database)
    certificates, trust = None, None
    if settings.broker_mtls_port:
        certificates = CertificateRegistry(database, settings)
        trust = mtls.TrustStore(database, settings)
        await asyncio.to_thread(trust.prepare)
    broker = DeviceBroker(
        broker_config(settings, registry, certificates),
        durable_channels=durability.channels if durability else (),
        trust=trust,
    )
    await broker.start()
    store = durability.store if durability else None
    if store is not None:
        saved = await asyncio.to_thread(store.take)
        if saved:
            count = broker.restore(saved)
            log.info("restored %d persistent session(s), %d queued message(s)", len(saved), count)
    watchdog = asyncio.create_task(
        watch(broker, registry, RECHECK_INTERVAL, certificates=certificates, trust=trust)
    )
    log.info("embedded MQTT broker listening (%s)", settings.broker_url)
    try:
        if ready is not None:
            ready(broker, registry)
        await (stop or asyncio.Event()).wait()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        if durability is not None:
            left = await broker.drain(durability.drain_timeout)
            if left:
                log.info("stopping with %d message(s) not yet acknowledged", left)
        if store is not None:
            sessions = broker.stored_sessions()
            kept = await asyncio.to_thread(store.save, sessions)
            log.info("kept %d persistent session(s), %d queued message(s)", len(sessions), kept)
        await broker.shutdown()
        database.engine.dispose()


async def watch(
    broker: Broker,
    registry: DeviceRegistry,
    interval: float,
    *,
    certificates: CertificateRegistry | None = None,
    trust: mtls.TrustStore | None = None,
) -> None:
    """Every ``interval`` seconds, disconnect the connected devices that lost their right,
    refresh the quarantine flags, and take up a new CRL."""
    while True:
        await asyncio.sleep(interval)
        try:
            if trust is not None:
                await asyncio.to_thread(trust.reload)
            await disconnect_stale(broker, registry, certificates)
            await refresh_quarantine(broker, registry.database)
        except Exception:
            # The database may be down for a moment: try again next round.
            log.exception("re-checking connected devices failed")


def _connected(broker: Broker) -> dict[str, Identity]:
    """client id -> identity of the connected, authenticated sessions."""
    grants: dict[str, Identity] = {}
    for client_id, (session, _handler) in list(broker.sessions.items()):
        identity = session_identity(session)
        if identity is not None and session.transitions.is_connected():
            grants[client_id] = identity
    return grants


async def _disconnect(broker: Broker, client_id: str, why: str) -> None:
    entry = broker.sessions.get(client_id)
    if entry is None:
        return
    session, handler = entry
    session.attributes.pop(IDENTITY, None)
    log.info("disconnecting %s: %s", client_id, why)
    # As if the connection dropped: the broker stops the handler, closes the socket and
    # publishes the will (the device's "offline" status), as for any lost connection.
    await handler.handle_connection_closed()


async def disconnect_stale(
    broker: Broker, registry: DeviceRegistry, certificates: CertificateRegistry | None = None
) -> list[str]:
    """Disconnect the connected devices ``registry.stale`` (password) or
    ``certificates.stale`` (certificate) names; return their client ids."""
    grants = _connected(broker)
    by_certificate = {
        client_id: identity
        for client_id, identity in grants.items()
        if isinstance(identity, CertificateIdentity)
    }
    by_password = {cid: g for cid, g in grants.items() if cid not in by_certificate}
    gone: list[str] = []
    if by_password:
        stale = await asyncio.to_thread(registry.stale, by_password)
        for client_id in stale:
            await _disconnect(broker, client_id, "its credential or device state changed")
        gone += stale
    if by_certificate:
        stale = (
            await asyncio.to_thread(certificates.stale, by_certificate)
            if certificates is not None
            else sorted(by_certificate)
        )
        for client_id in stale:
            why = "its certificate was revoked or expired, or its device state changed"
            await _disconnect(broker, client_id, why)
        gone += stale
    return sorted(gone)


async def refresh_quarantine(broker: Broker, database: Database) -> list[str]:
    """Set each device session's quarantine flag from the records (offline persistent
    sessions too: nothing is queued for a quarantined device); the client ids whose flag
    changed. A connected device let out of quarantine is disconnected: the subscriptions it
    was refused while in quarantine are then made again when it reconnects."""
    devices = {}
    for client_id, (session, _handler) in list(broker.sessions.items()):
        identity = session_identity(session)
        if identity is not None and not (identity.is_service or identity.is_bridge):
            devices[client_id] = identity.username
    if not devices:
        return []
    quarantined = await asyncio.to_thread(certauth.quarantined, database, set(devices.values()))
    changed = []
    for client_id, device_id in devices.items():
        entry = broker.sessions.get(client_id)
        if entry is None:
            continue
        session = entry[0]
        now, before = device_id in quarantined, session_quarantined(session)
        if now == before:
            continue
        changed.append(client_id)
        session.attributes[QUARANTINED] = now
        connected = session.transitions.is_connected()
        if now:
            log.info("%s is in quarantine: it may publish its status only", client_id)
            will = session.will_topic or ""
            may_will = allowed(device_id, Action.PUBLISH, will, False, quarantined=True)
            if session.will_flag and not may_will:
                # amqtt publishes a will without asking the topic plugins (it was checked at
                # CONNECT, before the quarantine).
                session.will_flag = False
        elif connected:
            await _disconnect(broker, client_id, "released from quarantine (to subscribe anew)")
    return changed
