"""The embedded MQTT broker: amqtt with the device plugins, for ``ampfleet up`` and laptops.

``run(settings)`` serves MQTT on the port of ``settings.broker_url`` (TLS when its scheme is
``mqtts``) and, when ``broker_tls_port`` is set, a second, TLS listener. Devices authenticate
against the records database (broker.registry); a watchdog re-checks the connected devices
every ``RECHECK_INTERVAL`` seconds and disconnects those whose credential was revoked or
rotated, or whose device was suspended, decommissioned or deleted, so the API never has to
reach the broker.

amqtt 0.12.1 speaks MQTT 3.1.1 only and has no ``$share``. It also touches the session
registry before it authenticates a CONNECT: a client that merely knows a device id could make
it forget the device's session (clean session) or take the connected device over (persistent
session). ``DeviceBroker`` authenticates first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker.amqtt_plugins import IDENTITY, session_identity
from broker.registry import DeviceRegistry, Identity
from cloud.db import Database
from cloud.devicelink.accounts import bridge_password, service_password
from cloud.identity.passwords import SecretHasher
from cloud.settings import Settings, SettingsError

log = logging.getLogger(__name__)

RECHECK_INTERVAL = 1.5  # seconds between re-checks of connected devices
# Persistent (clean session 0) sessions of devices that stay away longer are dropped, so a
# fleet that comes and goes does not grow the broker's memory for ever.
SESSION_EXPIRY = 24 * 3600
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


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


def broker_config(settings: Settings, registry: DeviceRegistry) -> dict[str, Any]:
    """amqtt's configuration: our listeners and our two plugins, and nothing else."""
    host, port, tls = listen_address(settings.broker_url)
    cert, key = settings.broker_tls_cert_file, settings.broker_tls_key_file
    if (tls or settings.broker_tls_port) and not (cert and key):
        raise SettingsError(
            "AMPFLEET_BROKER_TLS_CERT_FILE and AMPFLEET_BROKER_TLS_KEY_FILE are needed for the "
            "broker's TLS listener"
        )
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
    return {
        "listeners": listeners,
        "session_expiry_interval": SESSION_EXPIRY,
        # Exactly these: amqtt's defaults would add anonymous access and $SYS topics.
        "plugins": {
            "broker.amqtt_plugins.DeviceAuthPlugin": {"registry": registry},
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _Subscriptions(self._subscriptions)  # type: ignore[has-type]

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        if not await self._authenticate(session, self.listeners_config["default"]):
            session.parent = 0
            handler.attach(session, reader, writer)
            # CONNACK return code 5, not authorized (MQTT 3.1.1 table 3.1), then close.
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise MQTTError(f"{remote_address}:{remote_port}: not authorized")
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
        sends retained messages to a client only for its own new subscription.
        """
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if any(holder is session for holder, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


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
) -> None:
    """Serve MQTT until ``stop`` is set (or for ever); ``ready`` is called once listening."""
    if settings.log_level != "DEBUG":
        # amqtt logs every connection and packet at INFO: too much for a fleet.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
    for path in (settings.broker_tls_cert_file, settings.broker_tls_key_file):
        if path and not Path(path).is_file():
            raise SettingsError(f"broker TLS file {path} does not exist")
    database = Database(settings.database_url)
    registry = make_registry(settings, database)
    broker = DeviceBroker(broker_config(settings, registry))
    await broker.start()
    watchdog = asyncio.create_task(watch(broker, registry, RECHECK_INTERVAL))
    log.info("embedded MQTT broker listening (%s)", settings.broker_url)
    try:
        if ready is not None:
            ready(broker, registry)
        await (stop or asyncio.Event()).wait()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await broker.shutdown()
        database.engine.dispose()


async def watch(broker: Broker, registry: DeviceRegistry, interval: float) -> None:
    """Every ``interval`` seconds, disconnect the connected devices that lost their right."""
    while True:
        await asyncio.sleep(interval)
        try:
            await disconnect_stale(broker, registry)
        except Exception:
            # The database may be down for a moment: try again next round.
            log.exception("re-checking connected devices failed")


async def disconnect_stale(broker: Broker, registry: DeviceRegistry) -> list[str]:
    """Disconnect the connected devices ``registry.stale`` names; return their client ids."""
    grants: dict[str, Identity] = {}
    for client_id, (session, _handler) in list(broker.sessions.items()):
        identity = session_identity(session)
        if identity is not None and session.transitions.is_connected():
            grants[client_id] = identity
    if not grants:
        return []
    gone = await asyncio.to_thread(registry.stale, grants)
    for client_id in gone:
        entry = broker.sessions.get(client_id)
        if entry is None:
            continue
        session, handler = entry
        session.attributes.pop(IDENTITY, None)
        log.info("disconnecting %s: its credential or device state changed", client_id)
        # As if the connection dropped: the broker stops the handler, closes the socket and
        # publishes the will (the device's "offline" status), as for any lost connection.
        await handler.handle_connection_closed()
    return gone
