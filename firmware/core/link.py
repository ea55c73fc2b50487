"""The master's cloud link, I/O-free: session rules, offline buffer, config and commands.

Implements the device side of docs/device-contract.md 6-8 over any MQTT transport. The
transport (an adapter in firmware/hal or firmware/host, or an asyncio client in the fleet
simulator) is an object with::

    connect(client_id, will_topic, will_payload)   start connecting (clean session false,
                                                    keepalive 60 s, will QoS 1 retained)
    publish(topic, payload, qos, retain)            raise OSError when the connection is gone
    subscribe(topic, qos)
    disconnect()                                    a clean DISCONNECT (the will is discarded)

and it reports back by calling ``on_connected``, ``on_connect_failed(refused)``,
``on_disconnected`` and ``on_message(topic, payload)`` — synchronously from inside ``connect``
or later, from its own loop: both work. ``tick(now_ms)`` drives time (back-off, paced replay).

What the link does:

* connect after ``Backoff.first_delay`` (power-on jitter), then on every CONNACK subscribe to
  the downlink channels (``config/desired``, ``cmd``, ``ota``, ``auth/list``), publish
  ``status`` online (retained, with ``fw`` and the schema tag ``<family>.<schema_version>``),
  publish ``config/reported``, report dropped messages (``buffer.overflow``, and
  ``charging.lost`` for session events), then replay the outbox, session events first, each
  ring oldest first, paced;
* when the connection drops: back off with full jitter and buffer telemetry and events
  (command results and OTA statuses are held, a few, and sent on reconnect);
* ``config/desired``: a new version is checked against the schema (``params.Settings``),
  applied, reported; refusals become a ``config.rejected`` event; ``config.apply`` commands are
  answered for the version they name (``accepted`` first when it has not arrived yet);
* commands: expired -> rejected ``expired``; unknown -> ``unknown_command``; bad args ->
  ``bad_args`` (details in ``result``); others go to the handler; the last 16 final results are
  kept, so that a redelivered command id gets its stored result again instead of running twice;
* ``auth/list``: the decoded list goes to the handler (which keeps it when its version is new);
* ``cert``: the answer to ``request_certificate`` goes to the handler (certificate renewal,
  ``firmware.core.renewal``);
* a downlink message that breaks the contract (bad JSON, unknown fields, another device's or an
  unknown channel) is counted and reported as ``message.rejected``, never raised.

The ``handler`` (the master application) provides ``on_config(changed, reboot, now_ms)``,
``run_command(command, now_ms) -> (status, result, reason)``, ``on_ota(offer, now_ms)``
(offer None: the retained offer was cleared), ``on_auth_list(auth_list, now_ms)`` and
``on_certificate(reply, now_ms)``. A
handler that raises does not stop the link: the failure is counted and reported as an event.
"""

from firmware.core import contract
from firmware.core.backoff import Backoff
from firmware.core.outbox import Outbox

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from firmware.core.contract import Scalar

DOWN = "down"
CONNECTING = "connecting"
UP = "up"
CLOSED = "closed"  # disconnected on purpose (reboot): no reconnect

CONNECT_TIMEOUT_MS = 30000  # a transport that never answers a connect counts as a failure
DRAIN_INTERVAL_MS = 100  # replay at most 10 buffered messages per second (contract 7)
DRAIN_BURST_MS = 1000  # after a long tick gap, catch up by at most one second's worth
RECENT_COMMANDS = 16  # contract 4.5: results of the last 16 commands are remembered
MAX_HELD = 8  # command results and OTA statuses kept while offline
APPLY_COMMAND = "config.apply"


def _reasons(refused: "dict[str, str]") -> str:
    """``id: reason; id: reason`` sorted by id, cut to the contract's 256 characters."""
    text = "; ".join(key + ": " + refused[key] for key in sorted(refused))
    return text if len(text) <= contract.MAX_STRING else text[: contract.MAX_STRING - 3] + "..."


class Link:
    """One device's session with the cloud. All times are device-clock ms."""

    __slots__ = (
        "attempt_ms",
        "backoff",
        "clock_set",
        "device_id",
        "drain_at",
        "errors",
        "event_seq",
        "fw",
        "handler",
        "held",
        "hw",
        "next_attempt_ms",
        "now",
        "outbox",
        "pending_apply",
        "prefix",
        "recent",
        "refused",
        "rejected",
        "schema",
        "settings",
        "state",
        "telemetry_seq",
        "transport",
        "unclocked",
    )

    def __init__(
        self,
        device_id: str,
        fw: str,
        schema: str,
        transport: "Any",
        settings: "Any",
        handler: "Any",
        rand: "Any",
        outbox: "Outbox | None" = None,
        backoff: "Backoff | None" = None,
    ) -> None:
        contract.topic(device_id, contract.STATUS)  # refuses a bad device id early
        self.device_id = device_id
        self.prefix = contract.PREFIX + "/" + device_id + "/"
        self.fw = fw
        self.schema = schema
        self.transport = transport
        self.settings = settings
        self.handler = handler
        # "is None", not "or": an empty Outbox is falsy (it has a length).
        self.outbox = outbox if outbox is not None else Outbox()
        self.backoff = backoff if backoff is not None else Backoff(rand)
        self.state = DOWN
        self.now = 0
        self.next_attempt_ms = None  # type: int | None
        self.attempt_ms = 0
        self.drain_at = 0
        self.clock_set = False  # no telemetry, no events, no ts until SNTP has run (contract 8)
        self.telemetry_seq = 0  # restart at 0 on every boot (contract 7)
        self.event_seq = 0
        # (command id, result payload), oldest first
        self.recent = []  # type: list[tuple[str, bytes]]
        # (command id, version) waiting for the version
        self.pending_apply = []  # type: list[tuple[str, int]]
        self.refused = {}  # type: dict[str, str]  # refusals of the version last applied
        # (channel, payload) sent after the next CONNACK
        self.held = []  # type: list[tuple[str, bytes]]
        # The hardware IDs found at boot ({"chip": id, "slaves": {node: id}}), announced in
        # every online status (contract 4.2 ``hw``); None: not known, not announced.
        self.hw = None  # type: dict[str, object] | None
        self.rejected = 0  # downlink messages that broke the contract
        self.errors = 0  # handler failures
        self.unclocked = 0  # telemetry/events dropped because the clock was not set

    @property
    def up(self) -> bool:
        """True while connected."""
        return self.state == UP

    def will(self) -> "tuple[str, bytes, int, bool]":
        """(topic, payload, qos, retain) of the last will, for CONNECT."""
        return self.prefix + contract.STATUS, contract.LAST_WILL, 1, True

    # --- time ---------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> None:
        """Advance time: start a connection attempt when due, replay buffered messages."""
        self.now = now_ms
        if self.state == DOWN:
            if self.next_attempt_ms is None:
                self.next_attempt_ms = now_ms + self.backoff.first_delay()
            if now_ms >= self.next_attempt_ms:
                self.state = CONNECTING
                self.attempt_ms = now_ms
                topic, payload, _, _ = self.will()
                try:
                    self.transport.connect(self.device_id, topic, payload)
                except OSError:
                    self.on_connect_failed(False, now_ms)
        elif self.state == CONNECTING:
            if now_ms - self.attempt_ms >= CONNECT_TIMEOUT_MS:
                self.on_connect_failed(False, now_ms)
        elif self.state == UP:
            self.backoff.tick(now_ms)
            self._drain(now_ms)

    def next_wakeup_ms(self) -> "int | None":
        """When ``tick`` next has something to do (None: only when something arrives)."""
        if self.state == DOWN:
            return self.next_attempt_ms
        if self.state == CONNECTING:
            return self.attempt_ms + CONNECT_TIMEOUT_MS
        if self.state == UP and len(self.outbox):
            return self.drain_at
        return None

    # --- transport callbacks ------------------------------------------------------------------

    def on_connected(self, now_ms: "int | None" = None) -> None:
        """CONNACK accepted: subscribe, announce, report, replay (contract 6, in that order)."""
        now = self._time(now_ms)
        if self.state == CLOSED:
            return
        self.state = UP
        self.backoff.connected(now)
        try:
            for channel in contract.DOWNLINK:
                self.transport.subscribe(self.prefix + channel, contract.QOS[channel])
        except OSError:
            self.on_disconnected(now)
            return
        status = contract.encode_status(
            "online", now if self.clock_set else None, self.fw, self.schema, self.hw
        )
        if not self._publish(contract.STATUS, status) or not self.report_config():
            return
        dropped = self.outbox.take_dropped()
        if dropped and self.clock_set:
            # Ahead of the replay, not behind it: queued last in a full ring, it would push
            # out one more message.
            data = {"dropped": dropped}
            payload = contract.encode_event(now, self.event_seq, "buffer.overflow", "warning", data)
            self.event_seq += 1
            if not self._publish(contract.EVENTS, payload):
                self.outbox.put(contract.EVENTS, payload)
                return
        if self.outbox.session_dropped and self.clock_set:
            # Sessions the cloud will never bill: an error, not a warning (contract 7).
            data = {"dropped": self.outbox.session_dropped}
            lost = contract.SESSIONS_LOST
            payload = contract.encode_event(now, self.event_seq, lost, "error", data)
            self.event_seq += 1
            if not self._publish(contract.EVENTS, payload):
                return  # still counted: reported after the next connection
            self.outbox.take_session_dropped()
        held = self.held
        self.held = []
        for channel, payload in held:
            if not self._publish(channel, payload):
                return
        self.drain_at = now
        self._drain(now)

    def on_connect_failed(self, refused: bool = False, now_ms: "int | None" = None) -> None:
        """The attempt failed (``refused``: CONNACK 4 or 5, bad credentials)."""
        now = self._time(now_ms)
        if self.state == CLOSED:
            return
        self.state = DOWN
        self.next_attempt_ms = now + self.backoff.next_delay(refused)

    def on_disconnected(self, now_ms: "int | None" = None) -> None:
        """The connection dropped. Calling it twice is harmless."""
        now = self._time(now_ms)
        if self.state in (DOWN, CLOSED):
            return
        self.state = DOWN
        self.next_attempt_ms = now + self.backoff.next_delay()

    def close(self, now_ms: "int | None" = None) -> None:
        """Leave on purpose (reboot, OTA): status offline with ts, then DISCONNECT, which
        discards the will (MQTT-3.14.4-3). The link does not reconnect afterwards."""
        now = self._time(now_ms)
        if self.state == UP:
            ts = now if self.clock_set else None
            if self._publish(contract.STATUS, contract.encode_status("offline", ts)):
                self.transport.disconnect()  # never raises (hal/interface.py MqttTransport)
        self.state = CLOSED

    def on_message(self, topic: "Any", payload: "Any", now_ms: "int | None" = None) -> None:
        """A downlink message. Never raises: bad messages and handler failures are counted and
        reported as events."""
        now = self._time(now_ms)
        try:
            device_id, channel = contract.parse_topic(topic)
            if device_id != self.device_id:
                raise contract.ContractError("bad_topic", "device_id", "another device's topic")
            if not payload:
                # An empty retained payload deletes the retained message (MQTT-3.3.1-10). It is
                # not a new list or config: what the device holds stays in force.
                if channel == contract.OTA:
                    self.handler.on_ota(None, now)
                return
            if channel == contract.CONFIG_DESIRED:
                self._on_desired(contract.decode_config(payload), now)
            elif channel == contract.CMD:
                self._on_command(contract.decode_command(payload), now)
            elif channel == contract.OTA:
                self.handler.on_ota(contract.decode_ota(payload), now)
            elif channel == contract.AUTH_LIST:
                self.handler.on_auth_list(contract.decode_auth_list(payload), now)
            elif channel == contract.CERT:
                self.handler.on_certificate(contract.decode_cert(payload), now)
            else:
                raise contract.ContractError("bad_topic", "channel", "not a downlink channel")
        except contract.ContractError as exc:
            self.rejected += 1
            data = {"topic": str(topic)[:128], "reason": exc.reason}
            if exc.field is not None:
                data["field"] = exc.field
            self.send_event(now, "message.rejected", "warning", data)
        except Exception as exc:  # one bad message or handler never stops the device
            self.errors += 1
            data = {"topic": str(topic)[:128], "error": repr(exc)[:200]}
            self.send_event(now, "message.failed", "error", data)

    # --- uplink -------------------------------------------------------------------------------

    def send_telemetry(self, ts: int, node: str, values: "Mapping[str, Scalar]") -> bool:
        """One sample of ``node``: published now, or buffered while offline. False (counted)
        when the clock is not set yet."""
        if not self.clock_set:
            self.unclocked += 1
            return False
        payload = contract.encode_telemetry(
            ts, self.telemetry_seq, values, None if node == contract.DEFAULT_NODE else node
        )
        self.telemetry_seq += 1
        self._send(contract.TELEMETRY, payload)
        return True

    def send_event(
        self,
        ts: int,
        type: str,
        severity: str,
        data: "Mapping[str, object] | None" = None,
        node: "str | None" = None,
    ) -> bool:
        """An event: published now, or buffered while offline; False before the clock is set."""
        if not self.clock_set:
            self.unclocked += 1
            return False
        if node == contract.DEFAULT_NODE:
            node = None
        payload = contract.encode_event(ts, self.event_seq, type, severity, data, node)
        self.event_seq += 1
        self._send(contract.EVENTS, payload, type in contract.MUST_DELIVER)
        return True

    def send_ota_status(
        self, version: str, state: str, progress: "int | None" = None, reason: "str | None" = None
    ) -> None:
        """An OTA status: published now, or held until the next connection."""
        payload = contract.encode_ota_status(version, state, progress, reason)
        self._send_or_hold(contract.OTA_STATUS, payload)

    def request_certificate(self, csr: "str | None") -> bool:
        """Ask for a new certificate (contract 4.10): for the key of ``csr``, or the same key
        again when None. Only on a live connection, never buffered: the answer comes on this
        connection or the device asks again after the next one. True when published."""
        if self.state != UP:
            return False
        payload = contract.encode_cert_request(csr, csr is None)
        return self._publish(contract.CERT_REQUEST, payload)

    def report_config(self) -> bool:
        """Publish config/reported: the version applied last and every setting in force."""
        payload = contract.encode_config(self.settings.version, self.settings.in_force())
        if self.state != UP:
            return False  # sent after the next CONNACK anyway
        return self._publish(contract.CONFIG_REPORTED, payload)

    def command_done(
        self,
        command_id: str,
        status: str,
        result: "Mapping[str, object] | None" = None,
        reason: "str | None" = None,
    ) -> None:
        """The final result of a command first answered ``accepted``."""
        self._result(command_id, status, result, reason)

    # --- internals ----------------------------------------------------------------------------

    def _time(self, now_ms: "int | None") -> int:
        if now_ms is not None:
            self.now = now_ms
        return self.now

    def _publish(self, channel: str, payload: bytes) -> bool:
        """Publish on a live connection; a transport error means the connection is gone."""
        try:
            self.transport.publish(
                self.prefix + channel, payload, contract.QOS[channel], contract.RETAINED[channel]
            )
        except OSError:
            self.on_disconnected(self.now)
            return False
        return True

    def _send(self, channel: str, payload: bytes, must_deliver: bool = False) -> None:
        # Live messages wait behind buffered ones: the cloud sees one device's stream in order.
        if self.state == UP and not len(self.outbox) and self._publish(channel, payload):
            return
        self.outbox.put(channel, payload, must_deliver)

    def _send_or_hold(self, channel: str, payload: bytes) -> None:
        if self.state == UP and self._publish(channel, payload):
            return
        self.held.append((channel, payload))
        if len(self.held) > MAX_HELD:
            self.held.pop(0)

    def _drain(self, now: int) -> None:
        outbox = self.outbox
        if not len(outbox):
            return
        if self.drain_at < now - DRAIN_BURST_MS:
            self.drain_at = now - DRAIN_BURST_MS
        while len(outbox) and self.state == UP and now >= self.drain_at:
            channel, payload = outbox.peek()  # type: ignore[misc]
            if not self._publish(channel, payload):
                return  # stays first in line for the next connection
            outbox.pop()
            self.drain_at += DRAIN_INTERVAL_MS

    def _on_desired(self, desired: "Any", now: int) -> None:
        settings = self.settings
        if desired.version != settings.version:
            refused, changed, reboot = settings.apply(desired.values)
            settings.version = desired.version
            self.refused = refused
            self.handler.on_config(changed, reboot, now)
            if refused:
                data = {"version": desired.version, "params": refused}
                self.send_event(now, "config.rejected", "warning", data)
            self.report_config()
        # config.apply commands that were waiting for this version (or an older one).
        waiting = self.pending_apply
        self.pending_apply = []
        for command_id, version in waiting:
            if version <= settings.version:
                self._answer_apply(command_id, version)
            else:
                self.pending_apply.append((command_id, version))

    def _answer_apply(self, command_id: str, version: int) -> None:
        applied = self.settings.version
        if version < applied:  # superseded: what is in force is the later version's
            self._result(command_id, "ok", {"version": applied})
        elif self.refused:
            self._result(command_id, "rejected", {"version": applied}, _reasons(self.refused))
        else:
            self._result(command_id, "ok", {"version": applied})

    def _on_command(self, command: "Any", now: int) -> None:
        for command_id, payload in self.recent:
            if command_id == command.id:  # a QoS 1 redelivery: answer again, do not run again
                self._send_or_hold(contract.CMD_RESULT, payload)
                return
        if self.clock_set and command.expired(now):
            self._result(command.id, "rejected", None, "expired")
            return
        if command.name == APPLY_COMMAND:
            version = command.args.get("version")
            if type(version) is not int or version < 0:
                self._result(
                    command.id, "rejected", {"args": {"version": "expected an integer"}}, "bad_args"
                )
            elif version > self.settings.version:
                self._result(command.id, "accepted")
                self.pending_apply.append((command.id, version))
            else:
                self._answer_apply(command.id, version)
            return
        refusal = self.settings.family.command_refusal(command.name, command.args)
        if refusal is not None:
            reason, details = refusal
            self._result(command.id, "rejected", {"args": details} if details else None, reason)
            return
        try:
            status, result, reason = self.handler.run_command(command, now)
        except Exception as exc:  # the handler's bug is this command's error, not the link's
            self.errors += 1
            status, result, reason = "error", None, repr(exc)[:200]
        self._result(command.id, status, result, reason)

    def _result(
        self, command_id: str, status: str, result: "Any" = None, reason: "Any" = None
    ) -> None:
        payload = contract.encode_command_result(command_id, status, result, reason)
        for position, entry in enumerate(self.recent):
            if entry[0] == command_id:
                # accepted -> final: a redelivery gets the final answer
                self.recent[position] = (command_id, payload)
                break
        else:
            self.recent.append((command_id, payload))
            if len(self.recent) > RECENT_COMMANDS:
                self.recent.pop(0)
        self._send_or_hold(contract.CMD_RESULT, payload)
