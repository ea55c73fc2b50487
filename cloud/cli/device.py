"""``ampfleet device connect ID``: be a charger by hand, to try the platform without hardware.

It speaks the device contract (docs/device-contract.md) as firmware does, over one MQTT
connection: client id = username = device id, a persistent session, the last will, ``status``
online (firmware and schema versions) after every CONNACK, ``config/reported``, a telemetry
sample per node every ``--interval`` seconds, and an answer to every command. Every message it
receives is printed. One connection is the point: a device id may hold only one session, and a
second client with the same id takes it over (docs/try-a-device.md).

``DeviceSession`` is the device's behaviour, I/O-free (messages in, messages out, a clock
passed in); ``connect`` is the thin shell around it: ``cloud.devicelink.client.Link`` for MQTT,
``firmware.core.contract`` for every payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click

from cloud.cli.common import load_settings
from firmware.core import contract, topics
from parameters.errors import UnknownFamilyError
from parameters.schema import Family, ValueSpec

REMEMBERED_COMMANDS = 16  # contract 4.5: the ids of the last 16 commands and their results
SAMPLED_KINDS = ("telemetry", "status")
CONFIG_APPLY = "config.apply"  # contract 4.4: the command announcing a desired-config change


class Outgoing(NamedTuple):
    """A message the device publishes."""

    channel: str
    payload: bytes
    retain: bool = False


# Readings of a charger that charges one EV at about 16 A per phase, by parameter id, as a
# function of the seconds since the start. Parameters not named here get a value inside their
# declared range (``_fallback``), so any hardware family can be tried.
_CHARGING: dict[str, Callable[[float], Any]] = {
    "voltage_l1_v": lambda t: round(230.0 + 1.5 * math.sin(t / 7), 1),
    "voltage_l2_v": lambda t: round(229.5 + 1.5 * math.sin(t / 9), 1),
    "voltage_l3_v": lambda t: round(231.0 + 1.5 * math.sin(t / 11), 1),
    "voltage_v": lambda t: round(230.0 + 1.5 * math.sin(t / 7), 1),
    "current_l1_a": lambda t: round(16.0 + 0.2 * math.sin(t / 5), 2),
    "current_l2_a": lambda t: round(15.9 + 0.2 * math.sin(t / 6), 2),
    "current_l3_a": lambda t: round(16.1 + 0.2 * math.sin(t / 4), 2),
    "current_a": lambda t: round(16.0 + 0.2 * math.sin(t / 5), 2),
    "frequency_hz": lambda t: round(50.0 + 0.02 * math.sin(t / 13), 3),
    "power_factor": lambda _t: 0.99,
    "temperature_c": lambda t: round(31.0 + t / 600 + 0.3 * math.sin(t / 17), 1),
    "contactor_closed": lambda _t: True,
    "cp_state": lambda _t: "C",
    "cp_voltage_v": lambda _t: 6.0,
    "pp_current_a": lambda _t: 32,
    "wifi_rssi_dbm": lambda t: int(-58 - 3 * abs(math.sin(t / 19))),
    "uptime_s": lambda t: int(t),
    "session_s": lambda t: int(t),
}
_PHASE_POWER_W = 230.0 * 16.0  # one phase at 16 A


def _fallback(spec: ValueSpec) -> Any:
    """A value the spec accepts: its default, else the middle of its range."""
    if spec.default is not None:
        return spec.default
    if spec.type == "bool":
        return False
    if spec.type == "enum":
        return spec.values[0] if spec.values else ""
    if spec.type == "string":
        return ""
    low = spec.minimum if spec.minimum is not None else 0
    high = spec.maximum if spec.maximum is not None else low + 100
    if spec.step is not None:
        return low + spec.step * int((high - low) / 2 / spec.step)
    middle = (low + high) / 2
    return int(middle) if spec.type in ("int", "duration", "datetime") else float(middle)


class DeviceSession:
    """What the device does, without I/O: the messages it publishes on connecting, per sample
    and in answer to what the cloud sends. ``now_ms`` is the device clock (ms since the epoch)."""

    def __init__(self, family: Family, firmware_version: str, started_ms: int) -> None:
        self.family = family
        self.firmware_version = firmware_version
        self.started_ms = started_ms
        self.seq = 0  # telemetry counter (contract 7)
        self.event_seq = 0
        self.config_version = 0  # the desired version applied last
        self.config: dict[str, Any] = {}  # settings in force
        self.refused: dict[int, dict[str, str]] = {}  # version -> refused parameter -> reason
        self.results: OrderedDict[str, bytes] = OrderedDict()  # command id -> final result
        # config.apply commands whose desired version has not arrived yet: version -> command
        # ids. The command and the retained desired set travel on two topics, and a resumed
        # session delivers its queued command before the retained set the SUBSCRIBE brings.
        self.awaiting: dict[int, list[str]] = {}
        self.energy_wh = 0.0
        self._last_sample_ms = started_ms
        self._three_phase = any(p.id == "current_l3_a" for p in family.parameters)
        self._settings = {p.id: p for p in family.parameters if p.kind == "setting"}
        self._commands = {p.id: p for p in family.parameters if p.kind == "command"}
        self._sampled: dict[str, list[tuple[str, ValueSpec]]] = {}  # node -> (parameter, spec)
        for parameter in family.parameters:
            if parameter.kind in SAMPLED_KINDS and parameter.value is not None:
                self._sampled.setdefault(parameter.node, []).append((parameter.id, parameter.value))

    # -- what the device sends on its own -------------------------------------------------------
    def on_connected(self, now_ms: int) -> list[Outgoing]:
        """After every CONNACK (contract 6): status online, then the configuration in force."""
        status = contract.encode_status(
            "online", ts=now_ms, fw=self.firmware_version, schema=self.family.schema_tag
        )
        reported = contract.encode_config(self.config_version, self.config)
        return [
            Outgoing(topics.STATUS, status, retain=True),
            Outgoing(topics.CONFIG_REPORTED, reported, retain=True),
        ]

    def going_offline(self, now_ms: int) -> Outgoing:
        """The status a device publishes before it disconnects on purpose (contract 6)."""
        return Outgoing(topics.STATUS, contract.encode_status("offline", ts=now_ms), retain=True)

    def sample(self, now_ms: int) -> list[Outgoing]:
        """One telemetry message per node that measures something, with plausible values."""
        seconds = (now_ms - self.started_ms) / 1000
        phases = 3 if self._three_phase else 1
        power_w = round(phases * _PHASE_POWER_W * (0.99 + 0.01 * math.sin(seconds / 3)), 1)
        self.energy_wh += power_w * (now_ms - self._last_sample_ms) / 3_600_000
        self._last_sample_ms = now_ms
        computed: dict[str, Any] = {
            "power_w": power_w,
            "energy_wh": round(self.energy_wh, 1),
            "session_energy_wh": round(self.energy_wh, 1),
            "firmware_version": self.firmware_version,
        }
        messages = []
        for node in sorted(self._sampled):
            values: dict[str, contract.Scalar] = {}
            for name, spec in self._sampled[node]:
                hint = _CHARGING.get(name)
                if name in computed:
                    value = computed[name]
                elif hint is not None:
                    value = hint(seconds)
                else:
                    value = _fallback(spec)
                if spec.reason_to_refuse(value) is None:  # a family with a narrower range
                    values[name] = value
            if values:
                payload = contract.encode_telemetry(now_ms, self.seq, values, node=node)
                self.seq += 1
                messages.append(Outgoing(topics.TELEMETRY, payload))
        return messages

    # -- what the device answers ----------------------------------------------------------------
    def receive(self, channel: str, payload: bytes, now_ms: int) -> list[Outgoing]:
        """The answer to a message of a cloud -> device channel."""
        if not payload:
            return []  # a cleared retained topic (MQTT-3.3.1-10): not a message
        if channel == topics.CMD:
            return self._command(payload, now_ms)
        if channel == topics.CONFIG_DESIRED:
            return self._desired(payload, now_ms)
        if channel == topics.OTA:
            return self._ota(payload)
        if channel == topics.AUTH_LIST:
            applied = contract.decode_auth_list(payload)
            data = {"version": applied.version, "tokens": len(applied.tokens)}
            return [self._event(now_ms, "auth.list_applied", data)]
        return []

    def _command(self, payload: bytes, now_ms: int) -> list[Outgoing]:
        try:
            command = contract.decode_command(payload)
        except contract.ContractError:
            return []  # without a valid id there is nothing to answer
        earlier = self.results.get(command.id)
        if earlier is not None:  # QoS 1 redelivery: answer again, do not run again (4.5)
            return [Outgoing(topics.CMD_RESULT, earlier)]
        if command.name == CONFIG_APPLY and not command.expired(now_ms):
            version = command.args.get("version")
            if isinstance(version, int) and version > self.config_version:
                self.awaiting.setdefault(version, []).append(command.id)
                return []  # answered when that version arrives (_desired)
        status, reason, result = self._run(command, now_ms)
        return [self._result(command.id, status, reason, result)]

    def _result(
        self, command_id: str, status: str, reason: str | None, result: dict[str, Any] | None
    ) -> Outgoing:
        """The final answer to a command, remembered for a redelivery."""
        answer = contract.encode_command_result(command_id, status, result=result, reason=reason)
        self.results[command_id] = answer
        while len(self.results) > REMEMBERED_COMMANDS:
            self.results.popitem(last=False)
        return Outgoing(topics.CMD_RESULT, answer)

    def _run(
        self, command: contract.Command, now_ms: int
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """(status, reason, result) of a command; nothing real happens on a hand-made device."""
        if command.expired(now_ms):
            return "rejected", "expired", None
        if command.name == CONFIG_APPLY:
            return self._applied(command.args.get("version"))
        declared = self._commands.get(command.name)
        if declared is None:
            return "rejected", "unknown_command", None
        arguments = {a.id: a for a in declared.args}
        for name, value in command.args.items():
            argument = arguments.get(name)
            if argument is None or argument.value.reason_to_refuse(value) is not None:
                return "rejected", "bad_args", None
        if any(a.required and a.id not in command.args for a in declared.args):
            return "rejected", "bad_args", None
        return "ok", None, None

    def _applied(self, version: object) -> tuple[str, str | None, dict[str, Any] | None]:
        """The answer to ``config.apply`` of ``version``."""
        if version != self.config_version:
            return "error", f"desired version {version} is not the one in force", None
        refused = self.refused.get(self.config_version)
        if refused:
            reasons = "; ".join(f"{k}: {v}" for k, v in sorted(refused.items()))
            return "rejected", reasons[:256], None
        return "ok", None, {"version": self.config_version}

    def _desired(self, payload: bytes, now_ms: int) -> list[Outgoing]:
        desired = contract.decode_config(payload)
        if desired.version == self.config_version and self.config_version:
            return []  # a retained replay of what is applied (4.4 step 2)
        refused: dict[str, str] = {}
        for name, value in desired.values.items():
            setting = self._settings.get(name)
            why = "unknown setting" if setting is None or setting.value is None else None
            if why is None and setting is not None and setting.value is not None:
                why = setting.value.reason_to_refuse(value)
            if why is None:
                self.config[name] = value
            else:
                refused[name] = why
        self.config_version = desired.version
        self.refused[desired.version] = refused
        out = []
        if refused:
            data = {"version": desired.version, "params": refused}
            out.append(self._event(now_ms, "config.rejected", data, severity="warning"))
        in_force = {name: self.config[name] for name in desired.values if name in self.config}
        reported = contract.encode_config(desired.version, in_force)
        out.append(Outgoing(topics.CONFIG_REPORTED, reported, retain=True))
        for version in sorted(v for v in self.awaiting if v <= desired.version):
            for command_id in self.awaiting.pop(version):
                out.append(self._result(command_id, *self._applied(version)))
        return out

    def _ota(self, payload: bytes) -> list[Outgoing]:
        offer = contract.decode_ota(payload)
        if offer.version == self.firmware_version:
            state, reason = "confirmed", None
        else:
            state, reason = "failed", "a hand-made device installs no firmware"
        answer = contract.encode_ota_status(offer.version, state, reason=reason)
        return [Outgoing(topics.OTA_STATUS, answer)]

    def _event(
        self, now_ms: int, kind: str, data: dict[str, Any], severity: str = "info"
    ) -> Outgoing:
        payload = contract.encode_event(now_ms, self.event_seq, kind, severity, data)
        self.event_seq += 1
        return Outgoing(topics.EVENTS, payload)


# --- the shell: one MQTT connection ------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _show(arrow: str, topic: str, payload: bytes) -> None:
    text = payload.decode("utf-8", "replace") if payload else "(empty: retained message cleared)"
    click.echo(f"{arrow} {topic} {text}")


def read_credentials(path: Path) -> dict[str, Any]:
    """The JSON answer of ``POST /devices/{id}/credentials`` saved to a file."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--credentials") from exc
    if not isinstance(document, dict) or not isinstance(document.get("password"), str):
        raise click.BadParameter(f'{path}: no "password" in it', param_hint="--credentials")
    return document


async def run_device(
    session: DeviceSession,
    device_id: str,
    endpoint: Any,
    interval: float,
    duration: float,
    stop: asyncio.Event,
) -> int:
    """Be the device until ``stop`` or ``duration``; 0, or 1 when the broker refused it."""
    from cloud.devicelink.client import Link
    from cloud.devicelink.subscriptions import Message

    connections = 0

    def connected() -> None:
        # After every CONNACK (contract 6); the Link has restated the subscriptions already.
        nonlocal connections
        connections += 1
        click.echo(f"connected (connection {connections})", err=True)
        send(session.on_connected(_now_ms()))

    # A persistent session (contract 6): commands sent while it is away wait at the broker.
    link = Link(
        endpoint,
        device_id,
        clean_session=False,
        max_delay=10.0,
        will=(topics.device_topic(device_id, topics.STATUS), contract.LAST_WILL),
        on_connected=connected,
    )

    def send(messages: list[Outgoing]) -> None:
        for message in messages:
            topic = topics.device_topic(device_id, message.channel)
            if not link.publish_nowait(topic, message.payload, 1, retain=message.retain):
                click.echo(f"!  not connected: {topic} not sent", err=True)
                continue
            if message.channel != topics.TELEMETRY:
                _show("->", topic, message.payload)

    def received(message: Message) -> None:
        _show("<-", message.topic, message.payload)
        channel = message.topic.split("/", 2)[2]
        try:
            send(session.receive(channel, message.payload, _now_ms()))
        except contract.ContractError as exc:
            click.echo(f"!  {message.topic}: not a valid message ({exc})", err=True)

    for channel in topics.CLOUD_TO_DEVICE:  # exact filters: a device may use no wildcard
        link.subscribe(topics.device_topic(device_id, channel), received)
    if duration:
        asyncio.get_running_loop().call_later(duration, stop.set)
    click.echo(f"connecting to {endpoint.where} as {device_id}", err=True)
    if not await link.run(stop):
        if link.refused.is_set():
            click.echo(f"the broker refused {device_id}: {link.last_error}", err=True)
            return 1
        return 0  # stopped before connecting
    next_sample = time.monotonic()
    sent = 0
    while not stop.is_set():
        if link.is_connected and time.monotonic() >= next_sample:
            samples = session.sample(_now_ms())
            send(samples)
            sent += len(samples)
            click.echo(f"-> telemetry: {sent} samples sent", err=True)
            next_sample = time.monotonic() + interval
        if link.refused.is_set():
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    if link.is_connected:
        # Offline on purpose (contract 6): say so, then DISCONNECT, which discards the will.
        offline = session.going_offline(_now_ms())
        topic = topics.device_topic(device_id, offline.channel)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.publish(topic, offline.payload, 1, retain=True), 5)
        _show("->", topic, offline.payload)
    await link.close()
    return 1 if link.refused.is_set() else 0


@click.group("device")
def device() -> None:
    """Act as a device: try the platform without hardware (docs/try-a-device.md)."""


@device.command("connect")
@click.argument("device_id")
@click.option(
    "--password",
    envvar="AMPFLEET_DEVICE_PASSWORD",
    help="The device's MQTT password (or AMPFLEET_DEVICE_PASSWORD, or --credentials).",
)
@click.option(
    "--credentials",
    "credentials_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the JSON answer of POST /devices/{id}/credentials.",
)
@click.option(
    "--broker-url",
    help="mqtt:// or mqtts:// URL (default: the credentials' broker_url, else "
    "AMPFLEET_BROKER_URL).",
)
@click.option(
    "--family",
    default="ac22-3p",
    show_default=True,
    help="Hardware family: which telemetry, settings and commands the device has.",
)
@click.option("--firmware", default="1.0.0", show_default=True, help="Firmware version announced.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between telemetry samples.",
)
@click.option(
    "--duration", type=click.FloatRange(0), default=0, help="Seconds to run (0: until Ctrl-C)."
)
def connect(
    device_id: str,
    password: str | None,
    credentials_file: Path | None,
    broker_url: str | None,
    family: str,
    firmware: str,
    interval: float,
    duration: float,
) -> None:
    """Connect as device DEVICE_ID with its credentials and behave as a charger of FAMILY:
    announce itself online with --firmware and the family's schema, send a telemetry sample
    per node every --interval seconds, apply desired configuration, answer every command, and
    print every message it receives. Ctrl-C (or --duration) disconnects it cleanly."""
    from cloud.devicelink.endpoint import Endpoint
    from parameters.catalogue import family_of

    if not topics.is_device_id(device_id):
        raise click.BadParameter(f"not a device id: {device_id!r}", param_hint="DEVICE_ID")
    document = read_credentials(credentials_file) if credentials_file else {}
    password = password or document.get("password")
    if not password:
        raise click.UsageError(
            "give the password: --password, AMPFLEET_DEVICE_PASSWORD or --credentials"
        )
    settings = load_settings()
    url = broker_url or document.get("broker_url") or settings.broker_url
    try:
        schema = family_of(family)
    except UnknownFamilyError as exc:
        raise click.BadParameter(
            f"unknown hardware family {family!r}", param_hint="--family"
        ) from exc
    try:
        endpoint = Endpoint.from_url(url, device_id, password, settings.broker_tls_ca_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--broker-url") from exc
    session = DeviceSession(schema, firmware, _now_ms())

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await run_device(session, device_id, endpoint, interval, duration, stop)

    code = asyncio.run(main())
    if code:
        raise SystemExit(code)
