"""amqtt 0.12.1's broker-side protocol handler, keeping outgoing QoS 1 messages until acknowledged.

MQTT 3.1.1 §4.4 (MQTT-4.4.0-1): when a client reconnects with CleanSession 0, the server
re-sends every PUBLISH it sent and for which no PUBACK came. amqtt does keep ``inflight_out`` on
the session and resends it on reconnect (``ProtocolHandler._retry_deliveries``), but its QoS 1
flow removes the message from ``inflight_out`` in a ``finally`` — whether the PUBACK came, or the
wait was cancelled because the subscriber disconnected, or 5 s passed. A subscriber killed before
acknowledging (an ingest worker that acknowledges only what it stored) thus lost the message.

``DurableHandler`` removes a message from the session only when its PUBACK arrives (or, for a
clean session, when the connection ends: MQTT-3.1.2-6 discards that session anyway). There is
no PUBACK time-out: like Mosquitto, the broker waits for as long as the connection lives, and a
late PUBACK still settles the message.
"""

from __future__ import annotations

import asyncio

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import (
    OUTGOING,
    IncomingApplicationMessage,
    OutgoingApplicationMessage,
)


class DurableHandler(BrokerProtocolHandler):
    """A broker protocol handler whose outgoing QoS 1 messages stay in the session until PUBACK."""

    _stopped = False

    async def stop(self) -> None:
        """Stop; flows that have not sent yet leave their message to the next connection."""
        self._stopped = True
        await super().stop()

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        if app_message.direction != OUTGOING or not isinstance(
            app_message, OutgoingApplicationMessage
        ):
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        packet_id = app_message.packet_id
        if session is None or packet_id is None or app_message.qos != QOS_1:
            raise AMQTTError("an outgoing QoS 1 message needs a session and a packet id")
        # The session owns the message from now on: whatever happens to this connection, it is
        # resent on the next one (_retry_deliveries) until a PUBACK settles it.
        session.inflight_out.setdefault(packet_id, app_message)
        if self._stopped:
            self._settle_if_clean(packet_id)
            return
        # Waiter first, then PUBLISH: stop() cancels every registered waiter, so a flow cannot
        # be left waiting for ever on a connection that is gone.
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        resent = app_message.publish_packet is not None  # DUP 1 (MQTT-3.3.1-1)
        publish_packet = app_message.build_publish_packet(dup=resent)
        try:
            await self._send_packet(publish_packet)
            app_message.publish_packet = publish_packet
            app_message.puback_packet = await waiter
        except asyncio.CancelledError:
            self._settle_if_clean(packet_id)
            raise
        finally:
            if self._puback_waiters.get(packet_id) is waiter:
                del self._puback_waiters[packet_id]
        session.inflight_out.pop(packet_id, None)

    def _settle_if_clean(self, packet_id: int) -> None:
        """Forget an unacknowledged message of a clean session (nobody will resume it)."""
        if self.session is not None and self.session.clean_session:
            self.session.inflight_out.pop(packet_id, None)

    async def handle_puback(self, puback: PubackPacket) -> None:
        """Settle the message, even when nobody waits any more (a resend timed out)."""
        header = puback.variable_header
        if header is not None and self.session is not None:
            waiter = self._puback_waiters.get(header.packet_id)
            if waiter is None or waiter.done():
                self.session.inflight_out.pop(header.packet_id, None)
                return
        await super().handle_puback(puback)
