"""A charger's configuration behaviour, faithful to docs/device-contract.md 4.4-4.6 and 6.

It connects as the device (persistent session, last will), subscribes to its ``config/desired``
and ``cmd`` topics after every CONNACK, checks each desired value against its family's schema
(plus an optional firmware limit, to play a device that refuses what the cloud allowed),
applies the valid ones, reports ``config/reported`` (retained) with the version it applied and
the values in force, reports refusals as a ``config.rejected`` event, and answers the
``config.apply`` command on ``cmd/result``. Nothing here knows what a test expects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import paho.mqtt.client as mqtt

import parameters
from firmware.core import contract

TIMEOUT = 5.0


class SimulatedDevice:
    """One device's MQTT connection and its settings."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        password: str,
        family_id: str = "ac22-3p",
        refuse_above: Mapping[str, float] | None = None,
        schema: str | None = None,
    ) -> None:
        self.host, self.port, self.device_id = host, port, device_id
        self.family = parameters.load_family(family_id)
        # What the firmware announces in status.schema (contract 4.2): its family's current tag,
        # or another one to play firmware built against an older schema.
        self.schema = schema or self.family.schema_tag
        # The firmware's own limits, stricter than the schema (a derated unit, say).
        self.refuse_above = dict(refuse_above or {})
        self.values: dict[str, Any] = {
            p.id: p.value.default
            for p in self.family.parameters
            if p.kind == "setting" and p.value is not None
        }
        self.applied_version = 0
        self.managed: list[str] = []  # the parameters of the last desired set
        self.refusals: dict[int, dict[str, str]] = {}  # version -> parameter -> reason
        self.results: dict[str, bytes] = {}  # command id -> result payload (redeliveries)
        self.waiting: dict[str, int] = {}  # command id -> version not yet received
        self.received: list[tuple[str, bytes]] = []  # what the broker delivered on our topics
        # Deliveries on topics we never subscribed to. The embedded broker (amqtt 0.12.1) hands a
        # new subscriber other devices' retained config/desired; firmware filters by topic, and
        # so does this simulator, keeping them here so that a test can see the leak.
        self.foreign: list[tuple[str, bytes]] = []
        self.event_seq = 0
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=device_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,  # contract 6: the broker queues commands while we are away
        )
        self.client.username_pw_set(device_id, password)
        self.client.will_set(self._topic(contract.STATUS), contract.LAST_WILL, qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=3600, max_delay=3600)  # tests reconnect
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message

    def _topic(self, channel: str) -> str:
        return contract.topic(self.device_id, channel)

    # --- session ---------------------------------------------------------------------------

    def start(self) -> SimulatedDevice:
        """Connect and wait for the CONNACK."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError(f"{self.device_id} got no CONNACK")
        return self

    def stop(self) -> None:
        """Go offline on purpose: status offline, then DISCONNECT (contract 6)."""
        if self.connected.is_set():
            info = self.client.publish(
                self._topic(contract.STATUS), contract.encode_status("offline"), 1, retain=True
            )
            info.wait_for_publish(TIMEOUT)
            self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        # Contract 6, after every CONNACK: subscribe, announce, report.
        client.subscribe(
            [(self._topic(contract.CONFIG_DESIRED), 1), (self._topic(contract.CMD), 1)]
        )
        client.publish(
            self._topic(contract.STATUS),
            contract.encode_status("online", schema=self.schema),
            qos=1,
            retain=True,
        )
        with self._lock:
            self._report()
        self.connected.set()

    # --- messages ----------------------------------------------------------------------------

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        with self._lock:
            if message.topic not in (
                self._topic(contract.CONFIG_DESIRED),
                self._topic(contract.CMD),
            ):
                self.foreign.append((message.topic, payload))
                return
            self.received.append((message.topic, payload))
            if message.topic == self._topic(contract.CONFIG_DESIRED) and payload:
                self._apply(contract.decode_config(payload))
            elif message.topic == self._topic(contract.CMD):
                self._command(contract.decode_command(payload, int(time.time() * 1000)))

    def _apply(self, desired: contract.Config) -> None:
        if desired.version == self.applied_version:
            return  # a retained replay of what is in force (contract 4.4, step 2)
        refused: dict[str, str] = {}
        for key, value in desired.values.items():
            reason = self._reason_to_refuse(key, value)
            if reason is None:
                self.values[key] = value
            else:
                refused[key] = reason
        self.applied_version = desired.version
        self.managed = list(desired.values)
        self.refusals[desired.version] = refused
        if refused:
            self.event_seq += 1
            self.client.publish(
                self._topic(contract.EVENTS),
                contract.encode_event(
                    int(time.time() * 1000),
                    self.event_seq,
                    "config.rejected",
                    "warning",
                    {"version": desired.version, "params": refused},
                ),
                qos=1,
            )
        self._report()
        for command_id, version in list(self.waiting.items()):
            if version <= self.applied_version:
                del self.waiting[command_id]
                self._answer(command_id, version)

    def _reason_to_refuse(self, key: str, value: Any) -> str | None:
        try:
            parameter = self.family.parameter(key)
        except KeyError:
            return "unknown parameter"
        if parameter.kind != "setting" or parameter.value is None:
            return "not a setting"
        reason = parameter.value.reason_to_refuse(value)
        if reason is not None:
            return reason
        limit = self.refuse_above.get(key)
        if limit is not None and isinstance(value, int | float) and value > limit:
            return f"firmware limit {limit}"
        return None

    def _report(self) -> None:
        values = {key: self.values[key] for key in self.managed if key in self.values}
        self.client.publish(
            self._topic(contract.CONFIG_REPORTED),
            contract.encode_config(self.applied_version, values),
            qos=1,
            retain=True,
        )

    def _command(self, command: contract.Command) -> None:
        if command.id in self.results:  # a QoS 1 redelivery: answer again, do not rerun
            self.client.publish(self._topic(contract.CMD_RESULT), self.results[command.id], 1)
            return
        if command.name != "config.apply":
            self._result(command.id, "rejected", "unknown_command")
            return
        version = command.args.get("version")
        if type(version) is not int:
            self._result(command.id, "rejected", "bad_args")
        elif version <= self.applied_version:
            self._answer(command.id, version)
        else:  # the desired document is on its way (retained, delivered on subscribe)
            self.waiting[command.id] = version

    def _answer(self, command_id: str, version: int) -> None:
        refused = self.refusals.get(version, {})
        if refused:
            why = "; ".join(f"{key}: {reason}" for key, reason in sorted(refused.items()))
            self._result(command_id, "rejected", why)
        else:
            self._result(command_id, "ok", None)

    def _result(self, command_id: str, status: str, reason: str | None) -> None:
        payload = contract.encode_command_result(command_id, status, reason=reason)
        self.results[command_id] = payload
        self.client.publish(self._topic(contract.CMD_RESULT), payload, qos=1)

    # --- for tests --------------------------------------------------------------------------

    def downlink(self) -> list[tuple[str, bytes]]:
        """A copy of what the broker delivered so far."""
        with self._lock:
            return list(self.received)
