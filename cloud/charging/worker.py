"""``ampfleet worker charging``: charging sessions from the chargers' events.

Follows ``af/+/events`` (shared as ``$share/charging/...`` where the broker can split it, so
several workers share the load), applies ``charging.started``, ``charging.stopped`` and
``authorization.refused`` (``cloud.charging.sessions``) and sends the commands their effects
call for (``charging.stop`` for a card the cloud refuses). It also applies ``factory_reset``
(``cloud.pairing.service.factory_reset``: the charger's owners and guests go, its box code pairs
once more), since it is the one worker that follows the events. Other events are acknowledged
and left alone.

Nothing is lost on a database error: messages are acknowledged by hand (a persistent session,
``manual_ack``) only once their transaction committed, or once they were judged malformed. A
database that is down or locked is retried with back-off, for as long as it takes; a message
in hand when the worker stops stays unacknowledged, and the broker delivers it again. A
concurrent change of the same session (another worker, the API) is retried at once: applying
again sees the winner's row and does nothing. Malformed events are counted, logged and kept in
``<data_dir>/rejected.jsonl``; the worker goes on.

Every ``refresh_interval`` seconds a round marks FAILED the app starts that never began and
republishes the local authorization lists of the chargers where a guest's window opened or
closed since the last round (``cloud.access.authlists.refresh_authorization_lists``), and
those a broker outage kept from being published (``authorization.sweep``).

It is the one publisher of local authorization lists: every ``list_interval`` seconds it takes
the requests the API recorded with its changes (``cloud.access.outbox``), recomputes those
chargers' lists and publishes the changed ones over its one connection, a batch at a time with
every PUBACK awaited; on start it first catches up with what was requested or left unpublished
while no worker ran.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from sqlalchemy import or_, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from cloud.access import authlists as authorization
from cloud.access import outbox
from cloud.charging import events, sessions
from cloud.commands import service as commands
from cloud.commands.publisher import ConnectionCommandPublisher
from cloud.db import Database, utcnow
from cloud.devicelink import metrics
from cloud.devicelink.endpoint import Endpoint, shared
from cloud.devicelink.errors import LinkError
from cloud.devicelink.inbox import Inbox
from cloud.devicelink.rejects import Rejected, RejectLog
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink
from cloud.devices.models import Device
from cloud.identity.grants import ChargerAccess
from cloud.pairing import service as pairing
from firmware.core import contract

log = logging.getLogger(__name__)

GROUP = "charging"
DEFAULT_REFRESH_INTERVAL = 60.0
DEFAULT_LIST_INTERVAL = 1.0  # how often requested authorization lists are looked for
DEFAULT_START_TIMEOUT = dt.timedelta(minutes=5)
DEFAULT_COMMAND_TIMEOUT = dt.timedelta(minutes=5)
# A session changed by someone else at the same moment: applying again resolves it. More than
# this many in a row is no race but a constraint the event breaks (a deleted device...).
MAX_CONFLICTS = 5
# Guest windows that opened or closed while no worker ran, looked at on the first round.
FIRST_LOOKBACK = dt.timedelta(days=1)

EVENTS = Counter(
    "ampfleet_charging_events_total",
    "Charging events handled by the charging worker, by type and outcome.",
    ["type", "outcome"],
)
AUTH_LISTS_PUBLISHED = Counter(
    "ampfleet_auth_lists_published_total",
    "Local authorization lists the broker acknowledged, published by the charging worker.",
)
DB_RETRIES = Counter(
    "ampfleet_charging_db_retries_total",
    "Charging events applied again after a database error or a concurrent change.",
    ["kind"],
)


class ConnectionAuthListPublisher:
    """Publishes local authorization lists (retained, contract 4.9) on the worker's connection."""

    def __init__(self, connection: ThreadedLink, timeout: float = 10.0) -> None:
        self.connection = connection
        self.timeout = timeout

    def send_all(self, lists: Sequence[tuple[str, bytes]]) -> set[str]:
        """Publish retained at QoS 1, all at once, then wait for every PUBACK; the ids
        acknowledged (all of them, or none when any failed: a list sent twice is harmless)."""
        if not lists or not self.connection.connected.is_set():
            return set()
        try:
            batch = [authorization.message(device_id, payload) for device_id, payload in lists]
            self.connection.publish_all(batch, timeout=self.timeout)
        except LinkError as exc:
            log.warning("%d authorization lists not sent: %s", len(lists), exc)
            return set()
        AUTH_LISTS_PUBLISHED.inc(len(lists))
        return {device_id for device_id, _ in lists}


class ChargingWorker:
    """Keeps charging sessions equal to what chargers report."""

    def __init__(
        self,
        database: Database,
        endpoint: Endpoint,
        client_id: str,
        data_dir: Path,
        shared_subscriptions: bool,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        list_interval: float = DEFAULT_LIST_INTERVAL,
        start_timeout: dt.timedelta = DEFAULT_START_TIMEOUT,
        command_timeout: dt.timedelta = DEFAULT_COMMAND_TIMEOUT,
        max_payload_bytes: int = contract.MAX_PAYLOAD_BYTES,
        max_skew_ms: int = contract.MAX_CLOCK_SKEW_MS,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.database = database
        self.refresh_interval = refresh_interval
        self.list_interval = list_interval
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.max_payload_bytes = max_payload_bytes
        self.max_skew_ms = max_skew_ms
        self.max_retry_delay = max_retry_delay
        self.rejects = RejectLog(data_dir / "rejected.jsonl")
        topic = shared(contract.topic_filter(contract.EVENTS), GROUP, shared_subscriptions)
        # Persistent session and manual acks: what is not committed is delivered again.
        self.connection = ThreadedLink(endpoint, client_id, clean_session=False, manual_ack=True)
        self.connection.subscribe(topic, self._on_message)
        self.command_publisher = ConnectionCommandPublisher(self.connection)
        self.auth_list_publisher = ConnectionAuthListPublisher(self.connection)
        self.applied = 0  # charging events committed
        self.ignored = 0  # other events
        self.db_retries = 0  # database errors survived
        self.conflicts = 0  # concurrent changes resolved by applying again
        self._stop = threading.Event()
        self._inbox = Inbox(self._stop)
        self._threads: list[threading.Thread] = []
        self._windows_checked_at: dt.datetime | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, apply events in the background and run the periodic rounds."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._process_loop, name="charging-events", daemon=True),
            threading.Thread(target=self._refresh_loop, name="charging-refresh", daemon=True),
            threading.Thread(target=self._lists_loop, name="charging-auth-lists", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.connection.start()

    def stop(self) -> None:
        """Stop taking messages (what is in hand stays unacknowledged) and disconnect."""
        self._stop.set()
        self._inbox.close()
        for thread in self._threads:
            thread.join(timeout=30)
        self.connection.stop()
        self.rejects.close()

    def _on_message(self, message: Message) -> None:
        # The link's thread: hand over and return, so that keepalives keep flowing while a
        # slow database is retried.
        self._inbox.put(message)

    def _process_loop(self) -> None:
        while not self._stop.is_set():
            delivery = self._inbox.get()
            if delivery is None:
                return
            try:
                outcome = self.handle(delivery.topic, delivery.payload)
            except Exception:  # a bug must not stop the worker; the message is kept
                log.exception("charging event on %s failed", delivery.topic)
                why = Rejected("error", None, "the worker failed on it, see its log")
                self.rejects.reject(contract.EVENTS, delivery.topic, delivery.payload, why)
                outcome = "rejected"
            if outcome == "abandoned":
                continue  # stopping: not acknowledged, the broker delivers it again
            # Dropped by the link if it came on an earlier connection: the broker redelivers.
            self.connection.ack(delivery)

    # -- one message -----------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, now: dt.datetime | None = None) -> str:
        """Apply one message of ``af/+/events``: ``applied``, ``ignored``, ``rejected`` or
        ``abandoned`` (the worker stopped while the database was down: not acknowledged)."""
        metrics.RECEIVED.labels(contract.EVENTS).inc()
        try:
            device_id, channel = contract.parse_topic(topic)
            if channel != contract.EVENTS:
                raise contract.ContractError("bad_topic", None, f"not events: {channel}")
            event = contract.decode_event(
                payload, int(time.time() * 1000), self.max_payload_bytes, self.max_skew_ms
            )
        except contract.ContractError as exc:
            self.rejects.reject(
                contract.EVENTS, topic, payload, Rejected(exc.reason, exc.field, str(exc))
            )
            EVENTS.labels("invalid", "rejected").inc()
            return "rejected"
        if event.type == pairing.FACTORY_RESET_EVENT:
            outcome = self._factory_reset(device_id, event, topic, payload)
            EVENTS.labels(event.type, outcome).inc()
            return outcome
        if event.type not in events.CHARGING_EVENTS:
            self.ignored += 1
            return "ignored"
        outcome = self._apply(device_id, event, topic, payload, now)
        EVENTS.labels(event.type, outcome).inc()
        return outcome

    def _apply(
        self,
        device_id: str,
        event: contract.Event,
        topic: str,
        payload: bytes,
        now: dt.datetime | None,
    ) -> str:
        delay = 0.1
        conflicts = 0
        while True:
            try:
                with self.database.transaction() as session:
                    device = session.get(Device, device_id)
                    if device is None:
                        why = Rejected("unknown_device", None, "no such device in the registry")
                        self.rejects.reject(contract.EVENTS, topic, payload, why)
                        return "rejected"
                    effects = sessions.apply_event(session, device, event, now or utcnow())
                    planned = [
                        (c.id, c.device_id, c.name, dict(c.args), commands.expires_ms(c))
                        for c in sessions.request_effects(
                            session, device, effects, self.command_timeout
                        )
                    ]
                break
            except events.MalformedEventError as exc:
                why = Rejected("bad_value", exc.field, str(exc))
                self.rejects.reject(contract.EVENTS, topic, payload, why)
                return "rejected"
            except (IntegrityError, sessions.ConcurrentChangeError) as exc:
                conflicts += 1
                self.conflicts += 1
                DB_RETRIES.labels("conflict").inc()
                if conflicts > MAX_CONFLICTS:
                    why = Rejected("conflict", None, f"still conflicting after retries: {exc}")
                    self.rejects.reject(contract.EVENTS, topic, payload, why)
                    return "rejected"
                log.debug("%s: concurrent change, applying again: %s", device_id, exc)
            except (OperationalError, InterfaceError) as exc:
                # The database is down, locked or restarting: wait and try again, however long.
                self.db_retries += 1
                DB_RETRIES.labels("database").inc()
                log.warning(
                    "database error on %s event of %s; retrying in %.1fs: %s",
                    event.type,
                    device_id,
                    delay,
                    exc.orig if isinstance(exc, DBAPIError) else exc,
                )
                if self._stop.wait(delay):
                    return "abandoned"
                delay = min(delay * 2, self.max_retry_delay)
            except DBAPIError as exc:  # data the database refuses: retrying will not help
                why = Rejected("unstorable", None, str(exc.orig)[:200])
                self.rejects.reject(contract.EVENTS, topic, payload, why)
                return "rejected"
        self.applied += 1
        self._send(planned)
        return "applied"

    def _factory_reset(
        self, device_id: str, event: contract.Event, topic: str, payload: bytes
    ) -> str:
        """Clear the owners and guests of a charger that reports a factory reset."""
        delay = 0.1
        happened_at = dt.datetime.fromtimestamp(event.ts / 1000, dt.UTC)
        while True:
            try:
                with self.database.transaction() as session:
                    device = session.get(Device, device_id)
                    if device is None:
                        why = Rejected("unknown_device", None, "no such device in the registry")
                        self.rejects.reject(contract.EVENTS, topic, payload, why)
                        return "rejected"
                    removed = pairing.factory_reset(
                        session, device, happened_at=happened_at, worker=GROUP
                    )
                break
            except (OperationalError, InterfaceError) as exc:
                self.db_retries += 1
                DB_RETRIES.labels("database").inc()
                log.warning("database error on factory reset of %s; retrying: %s", device_id, exc)
                if self._stop.wait(delay):
                    return "abandoned"
                delay = min(delay * 2, self.max_retry_delay)
        if removed is None:
            log.info("factory reset of %s older than its last pairing: ignored", device_id)
            self.ignored += 1
            return "ignored"
        log.info("factory reset of %s: %d owners and guests removed", device_id, len(removed))
        self.applied += 1
        return "applied"

    def _send(self, planned: list[tuple[str, str, str, dict[str, Any], int]]) -> None:
        sent = [
            command_id
            for command_id, device_id, name, args, expires in planned
            if self.command_publisher.send_command(device_id, command_id, name, args, expires)
        ]
        if not sent:
            return
        try:
            with self.database.transaction() as session:
                commands.mark_sent(session, sent)
        except DBAPIError:  # the config worker's sweep re-sends it: a duplicate is harmless
            log.warning("could not mark commands %s sent", sent)

    # -- periodic rounds -------------------------------------------------------------------------
    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception:  # the next round retries; a dead thread never would
                log.exception("charging refresh round failed")

    def _lists_loop(self) -> None:
        # Catch up at once on every (re)connection (requests left while no worker ran, lists
        # a broker outage kept unpublished), then look for requests every list_interval.
        swept = None
        while not self._stop.is_set():
            if self.connection.connected.is_set():
                try:
                    if swept != self.connection.generation:
                        connection = self.connection.generation
                        with self.database.transaction() as session:
                            authorization.sweep(session, self.auth_list_publisher)
                        swept = connection
                    self.publish_requested_lists()
                except Exception:  # the next pass retries; a dead thread never would
                    log.exception("publishing requested authorization lists failed")
            if self._stop.wait(self.list_interval):
                return

    def publish_requested_lists(self, now: dt.datetime | None = None) -> list[str]:
        """Recompute and publish the lists the API asked for (``cloud.access.outbox``), over
        this worker's connection, in batches; the ids published."""
        with self.database.transaction() as session:
            return outbox.publish_requested(session, self.auth_list_publisher, at=now)

    def refresh(self, now: dt.datetime | None = None) -> dict[str, list[str]]:
        """One round: failed starts, then the lists of chargers whose guest windows moved."""
        now = now or utcnow()
        with self.database.transaction() as session:
            failed = sessions.fail_unstarted(session, now, self.start_timeout)
        return {"failed": failed, "auth_lists": self.refresh_guest_windows(now)}

    def refresh_guest_windows(self, now: dt.datetime | None = None) -> list[str]:
        """Republish the lists of chargers where a guest window opened or closed since the last
        round, and those never published; the ids published."""
        now = now or utcnow()
        since = self._windows_checked_at or now - FIRST_LOOKBACK
        with self.database.transaction() as session:
            device_ids = sorted(
                set(
                    session.scalars(
                        select(ChargerAccess.device_id).where(
                            or_(
                                (ChargerAccess.valid_from > since)
                                & (ChargerAccess.valid_from <= now),
                                (ChargerAccess.valid_until > since)
                                & (ChargerAccess.valid_until <= now),
                            )
                        )
                    )
                )
            )
            published = authorization.refresh_authorization_lists(
                session, device_ids, self.auth_list_publisher, at=now
            )
        with self.database.transaction() as session:
            # Lists never published (the broker was down when they changed) go out now.
            published += authorization.sweep(session, self.auth_list_publisher, at=now)
        self._windows_checked_at = now
        return list(published)
