"""gmqtt 0.8.0 (pinned) internals, all in one place.

gmqtt acknowledges a QoS 1 message when its ``on_message`` returns, has no PUBACK callback,
keeps every subscription in a list it scans on each SUBACK (O(n²) for the OCPP bridge's tens
of thousands), and does not say which CONNACK refused it. ``Wire`` replaces the few methods of
its packet handler that decide those, on one client instance:

* ``_handle_qos_1_publish_packet`` hands the packet id over instead of acknowledging, so the
  owner acknowledges when its work is done (``puback``);
* ``_handle_puback_packet`` also reports the packet id (``on_puback``);
* ``_handle_connack_packet`` also reports the return code (``on_connack_code``);
* SUBSCRIBE / UNSUBSCRIBE go out through the connection, without gmqtt's bookkeeping (the
  ``Link`` keeps its own registry and restates it on every CONNACK);
* ``publish`` returns the packet id gmqtt's ``Client.publish`` keeps to itself;
* a DISCONNECT is written only to a connection still open (gmqtt writes one before each
  reconnect and on ``disconnect``, logging "[TRYING WRITE TO CLOSED SOCKET]" once the broker
  is gone), and its reconnects are tracked so that ``stop_reconnecting`` can cancel them; a
  reconnect cancelled so (or by the loop's end) is no error: gmqtt's done-callback would read
  the exception of the cancelled task, raising CancelledError into the loop's handler; and a
  write that races the loss of the connection (a PUBACK, a publish in the same loop turn) is
  not logged either: gmqtt drops it, the ``Link`` logs the loss itself, and what it carried is
  sent again (QoS 1 redelivery, the resend on the next CONNACK); a connection reset by the
  broker (killed, restarted) is logged in one line, without gmqtt's traceback;
* its reconnects keep the client's session kind (gmqtt's ``reconnect`` asks for a persistent
  session whatever the client was made with: a clean-session client such as the OCPP bridge
  would leave subscriptions at the broker after a crash).

``tests/devicelink`` and ``tests/ingest/test_pipeline.py`` check the behaviour these hooks
give against real brokers, so a gmqtt upgrade that moves them fails there first.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands

_PUBACK = struct.Struct("!H")
_CLOSED_SOCKET_WRITE = "[TRYING WRITE TO CLOSED SOCKET]"
_CONNECTION_LOST = "[EXC: CONN LOST]"


class _QuietConnectionLoss(logging.Filter):
    """Drops gmqtt's warning about a write to a connection already lost, and shortens its
    warning about a lost connection to one line (the reason, no traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _CLOSED_SOCKET_WRITE:
            return False
        if record.msg == _CONNECTION_LOST and record.exc_info:
            record.msg, record.args = "connection lost: %s", (record.exc_info[1],)
            record.exc_info, record.exc_text = None, None
        return True


_QUIET_LOSS = _QuietConnectionLoss()

#: (packet id, payload, topic, properties) of a QoS 1 message, in the order gmqtt passes them;
#: a topic gmqtt could not decode as UTF-8 arrives as bytes.
Qos1 = Callable[[int, bytes, Any, dict[str, Any]], None]


class Wire:
    """The hooks on one gmqtt client's packet handler."""

    def __init__(
        self,
        client: gmqtt.Client,
        on_qos1: Qos1,
        on_puback: Callable[[int], None],
        on_connack_code: Callable[[int], None],
    ) -> None:
        self.client = client
        protocol_log = logging.getLogger("gmqtt.mqtt.protocol")
        if _QUIET_LOSS not in protocol_log.filters:
            protocol_log.addFilter(_QUIET_LOSS)
        handler = client._package_handler
        self._handler = handler
        handler._handle_qos_1_publish_packet = on_qos1
        original_puback = handler._handle_puback_packet
        original_connack = handler._handle_connack_packet

        def puback(cmd: int, packet: bytes) -> None:
            original_puback(cmd, packet)
            on_puback(_PUBACK.unpack_from(packet)[0])

        def connack(cmd: int, packet: bytes) -> None:
            if len(packet) >= 2:
                on_connack_code(packet[1])
            original_connack(cmd, packet)

        handler._handle_puback_packet = puback
        handler._handle_connack_packet = connack
        # The handler caches its methods by packet type on first use: drop what it has.
        for command in (MQTTCommands.PUBLISH, MQTTCommands.PUBACK, MQTTCommands.CONNACK):
            handler._handler_cache.pop(command, None)
        self._coalescing: Coalescing | None = None
        original_create = client._create_connection
        session_kind = bool(client._clean_session)

        async def create_connection(
            host: str, port: int, ssl: Any, clean_session: bool, keepalive: int
        ) -> Any:
            del clean_session  # False on every reconnect: see the module's docstring
            return await original_create(host, port, ssl, session_kind, keepalive)

        client._create_connection = create_connection

        original_disconnect = client._disconnect

        async def disconnect(reason_code: int = 0, **properties: Any) -> None:
            connection = client._connection
            if connection is None or not connection.is_closing():
                await original_disconnect(reason_code, **properties)
                return
            client._connection = None  # the rest of gmqtt's bookkeeping, without the write
            try:
                await original_disconnect(reason_code, **properties)
            finally:
                client._connection = connection

        client._disconnect = disconnect
        self._reconnects: set[asyncio.Task[Any]] = set()
        original_reconnect = client.reconnect

        async def reconnect(delay: bool = False) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._reconnects.add(task)
                task.add_done_callback(self._reconnects.discard)
            await original_reconnect(delay=delay)

        # The handler calls its own reference; a failed reconnect schedules ``self.reconnect``.
        client.reconnect = reconnect
        handler._reconnect_callback = reconnect
        original_report = handler._handle_exception_in_future

        def report(future: asyncio.Future[Any], msg: str | None = None) -> None:
            if not future.cancelled():
                original_report(future, msg)

        handler._handle_exception_in_future = report

    @property
    def connected(self) -> bool:
        """Whether the connection is up and its CONNACK received."""
        return bool(self.client.is_connected)

    def stop_reconnecting(self) -> None:
        """Cancel a pending reconnect (after ``disconnect``, which stops new ones): one asleep in
        its back-off would otherwise connect again after the close."""
        for task in list(self._reconnects):
            task.cancel()

    def puback(self, mid: int) -> None:
        """Send the PUBACK of ``mid`` on the current connection."""
        self._handler._send_puback(mid)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int | None:
        """Send a PUBLISH; its packet id (None at QoS 0). A QoS 1 message is kept for
        redelivery on reconnect until its PUBACK, as gmqtt's own ``publish`` does."""
        message = gmqtt.Message(topic, payload, qos=qos, retain=retain)
        mid, package = self.client._connection.publish(message)
        if qos == 0:
            return None
        self.client._persistent_storage.push_message(mid, package)
        return int(mid)

    def subscribe(self, filters: list[tuple[str, int]]) -> int:
        """Send one SUBSCRIBE; its packet id."""
        subscriptions = [gmqtt.Subscription(f, qos=qos) for f, qos in filters]
        return int(self.client._connection.subscribe(subscriptions))

    def unsubscribe(self, filters: list[str]) -> None:
        """Send one UNSUBSCRIBE."""
        self.client._connection.unsubscribe(filters)

    def pause_reading(self, paused: bool) -> None:
        """Stop (or resume) reading the socket: the broker then holds what it has not sent."""
        transport = getattr(self.client._connection, "_transport", None)
        if transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def coalesce(self, on_flush: Callable[[int], None] | None) -> None:
        """Buffer what the current connection writes during one loop turn into one ``send``."""
        self._coalescing = Coalescing(self.client._connection._protocol, on_flush)

    def flush(self) -> None:
        """Write what is buffered and write straight through again (before a DISCONNECT)."""
        if self._coalescing is not None:
            self._coalescing.detach()
            self._coalescing = None


class Coalescing:
    """Replaces the ``write_data`` of one gmqtt protocol (a connection's) with a buffered one
    that flushes once per loop turn: when one turn handles many messages, the ``send`` system
    calls were most of the OCPP bridge's time (measured)."""

    def __init__(self, protocol: Any, on_flush: Callable[[int], None] | None) -> None:
        self._protocol = protocol
        self._write: Callable[[bytes], None] = protocol.write_data
        self._buffer: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._on_flush = on_flush
        protocol.write_data = self.write

    def detach(self) -> None:
        """Flush, and write straight through again."""
        self.flush()
        self._protocol.write_data = self._write

    def write(self, data: bytes) -> None:
        """Buffer ``data`` until the end of this loop turn."""
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(data)

    def flush(self) -> None:
        """Write what the turn buffered, in one write."""
        if self._buffer:
            if self._on_flush is not None:
                self._on_flush(len(self._buffer))
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._write(data)
