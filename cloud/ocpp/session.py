"""One charger's connection: the ocpp library's ``ChargePoint`` with the bridge's handlers.

What the library does (ocpp 2.1.0, read before relying on it): framing, the JSON-schema
validators, matching answers to calls, one call at a time. What it gets wrong, and this class
fixes in ``route_message``/``_handle_call``:

* an unparseable frame is only logged: the charger gets no answer. Here it gets a CallError
  with message id ``-1`` (the id could not be read; OCPP-J 2.0.1 part 4 4.2.3):
  ``RpcFrameworkError`` (2.0.1) or ``FormationViolation`` (1.6);
* it swaps NotImplemented and NotSupported: an unknown action is ``NotImplemented`` ("not
  known by receiver"), a known action the bridge does not take is ``NotSupported``;
* it answers 1.6 chargers with 2.0.1 spellings: ``FormatViolation`` is ``FormationViolation``
  and ``OccurrenceConstraintViolation`` is ``OccurenceConstraintViolation`` in 1.6;
* its receive loop is sequential: a handler that awaited a call to the charger would wait for
  the answer that loop can never read. Handlers here never call: commands and follow-ups go
  through one job queue per charger, run by a task of their own, one call at a time.

Validation: every request is checked against the version's schema (compiled, ``schemas``),
every answer and call too; a charger marked ``lenient`` (a vendor known to deviate) skips the
checks of what it sends and of what the bridge answers it.

Id tokens are judged by the charger's local authorization list (``authorization``), which the
bridge also keeps on the charger with SendLocalList, as a job like the commands.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import websockets
from ocpp.charge_point import (
    ChargePoint,
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import (
    FormatViolationError,
    InternalError,
    NotSupportedError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
)
from ocpp.exceptions import (
    NotImplementedError as OcppNotImplementedError,
)
from ocpp.messages import CallError, MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.protocol import State

from cloud.ocpp import UnsupportedCommandError, metrics, schemas
from cloud.ocpp.authorization import (
    ACCEPTED,
    INVALID,
    AuthorizationMemory,
    Verdict,
    get_local_list_version_call,
    send_local_list_call,
    token_info,
)
from cloud.ocpp.certificates import CsrSigner
from cloud.ocpp.downlink import (
    Answer,
    Outgoing,
    config_call,
    ota_call,
    remote_start_token,
    to_call,
)
from cloud.ocpp.link import BridgeLink
from cloud.ocpp.meter import MeterMap, format_time
from cloud.ocpp.registry import Admission, Recorder
from cloud.ocpp.uplink import V16, V201, DataTransferRules, Publish, Uplink, token_of
from firmware.core import contract
from parameters import Family

log = logging.getLogger(__name__)

REMEMBERED_COMMANDS = 16  # contract 4.5: a redelivered id is answered again, not rerun
CONFIG_WAIT_S = 10.0  # how long config.apply waits for the desired document it names
# How long after a charger connects a token waits for its list, when the bridge has none yet:
# the retained list arrives just after the subscription, and a charger that was offline often
# sends its queued StartTransaction (or a card's Authorize) at once. Refusing a valid card in
# that window would stop a session that is fine.
AUTH_LIST_GRACE_S = 3.0
# Answers to SendLocalList that mean the charger keeps no list (1.6 NotSupported, or a
# CallError NotSupported/NotImplemented): not asked again on this connection.
_NO_LOCAL_LIST = ("NotSupported", "NotImplemented")
MAX_REASON = 256
_V16_CODES = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "FormationViolation",
}
# The requests each version's chargers may send and the bridge takes.
_HANDLED = {
    V16: frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "MeterValues",
            "SecurityEventNotification",
            "SignCertificate",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
        }
    ),
    V201: frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "FirmwareStatusNotification",
            "Heartbeat",
            "LogStatusNotification",
            "MeterValues",
            "NotifyEvent",
            "PublishFirmwareStatusNotification",
            "SecurityEventNotification",
            "SignCertificate",
            "StatusNotification",
            "TransactionEvent",
        }
    ),
}
_KNOWN = {V16: frozenset(a.value for a in Action16), V201: frozenset(a.value for a in Action201)}


@dataclasses.dataclass
class SessionContext:
    """What every session of one bridge shares."""

    link: BridgeLink
    recorder: Recorder
    heartbeat_interval: int
    call_timeout: int
    transfers: DataTransferRules
    signer: CsrSigner | None = None
    background: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set)
    authorizations: AuthorizationMemory = dataclasses.field(default_factory=AuthorizationMemory)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())


# Key conversions, each computed once per process (the library derives them by regular
# expressions on every message). The keys are the schemas' property names: a bounded set, but
# a charger could send others (the schema refuses them after conversion), so each cache stops
# growing at a limit.
_SNAKE_KEYS: dict[str, str] = {}
_CAMEL_KEYS: dict[str, str] = {}
_MAX_KEYS = 4096


def _snake_key(key: str) -> str:
    found = _SNAKE_KEYS.get(key)
    if found is None:
        converted: dict[str, Any] = camel_to_snake_case({key: None})
        found = next(iter(converted))
        if len(_SNAKE_KEYS) < _MAX_KEYS:
            _SNAKE_KEYS[key] = found
    return found


def _camel_key(key: str) -> str:
    found = _CAMEL_KEYS.get(key)
    if found is None:
        converted: dict[str, Any] = snake_to_camel_case({key: None})
        found = next(iter(converted))
        if len(_CAMEL_KEYS) < _MAX_KEYS:
            _CAMEL_KEYS[key] = found
    return found


def _snake(data: Any) -> Any:
    """The library's camel_to_snake_case, each key converted once per process."""
    kind = type(data)
    if kind is dict:
        return {_snake_key(k): _snake(v) for k, v in data.items()}
    if kind is list:
        return [_snake(v) for v in data]
    return data


def _camel(data: Any) -> Any:
    """The library's snake_to_camel_case, each key converted once per process."""
    kind = type(data)
    if kind is dict:
        return {_camel_key(k): _camel(v) for k, v in data.items()}
    if kind is list:
        return [_camel(v) for v in data]
    return data


def _body(response: Any) -> Any:
    """A handler's answer (a call_result dataclass) as the JSON payload: camelCase keys, no
    empty fields. Most answers (MeterValues, StatusNotification...) have no field set: {}."""
    if dataclasses.is_dataclass(response) and all(v is None for v in vars(response).values()):
        return {}
    return _camel(remove_nones(serialize_as_dict(response)))


@contextlib.contextmanager
def _refusing() -> Iterator[None]:
    """What a handler cannot translate becomes a CallError the charger can act on."""
    try:
        yield
    except contract.ContractError as exc:
        raise PropertyConstraintViolationError(details={"cause": str(exc)}) from exc
    except (KeyError, TypeError) as exc:
        raise ProtocolError(details={"cause": f"missing or malformed field {exc}"}) from exc
    except ValueError as exc:
        raise PropertyConstraintViolationError(details={"cause": str(exc)}) from exc


class BridgedCharger(ChargePoint):
    """A charger's session; ``Charger16``/``Charger201`` set the version, as the library's
    version classes do."""

    _ocpp_version = V16
    _call: Any = call16
    _call_result: Any = result16

    def __init__(
        self,
        connection: Any,
        admission: Admission,
        context: SessionContext,
        family: Family | None,
        meters: MeterMap,
    ) -> None:
        super().__init__(admission.device_id, connection, response_timeout=context.call_timeout)
        self.device_id = admission.device_id
        self.version = self._ocpp_version
        self.context = context
        self.family = family
        self.lenient = admission.lenient
        self.uplink = Uplink(self.device_id, self.version, meters, context.transfers)
        self.uplink.firmware = admission.firmware_version
        self.started_ms = self.uplink.now_ms()
        self.superseded = False
        self.jobs: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self.answers: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.desired: contract.Config | None = None
        self.desired_arrived = asyncio.Event()
        self.config_outcomes: dict[int, Answer] = {}
        self.offered_version: str | None = None
        self._auth_list_arrived: asyncio.Event | None = None  # made when a token must wait
        self._auth_grace_until = time.monotonic() + AUTH_LIST_GRACE_S
        self._list_checked = False  # GetLocalListVersion asked on this connection
        self._list_unsupported = False
        self._list_failed_version: int | None = None  # not retried on this connection
        self._sync_queued = False
        self._statuses: collections.deque[bytes] = collections.deque(maxlen=16)
        self._sent = False
        for action in list(self.route_map):
            if action not in _HANDLED[self.version]:
                del self.route_map[action]
            elif self.lenient:
                self.route_map[action]["_skip_schema_validation"] = True

    # --- publishing ------------------------------------------------------------------------

    def publish(self, messages: list[Publish]) -> None:
        """Publish contract messages for this charger."""
        for message in messages:
            if message.channel == contract.STATUS:
                self._statuses.append(message.payload)
            self.context.link.publish(
                self.device_id, message.channel, message.payload, message.retain
            )

    def answer(self, command_id: str, answer: Answer) -> None:
        """Publish a command result (contract 4.6) and remember it for redeliveries."""
        reason = answer.reason[:MAX_REASON] if answer.reason else None
        try:
            payload = contract.encode_command_result(
                command_id, answer.status, answer.result, reason
            )
        except contract.ContractError as exc:  # e.g. a configuration too large for a message
            payload = contract.encode_command_result(
                command_id,
                answer.status,
                None,
                f"{reason or ''} (result left out: {exc.reason})"[:MAX_REASON],
            )
        self.answers[command_id] = payload
        while len(self.answers) > REMEMBERED_COMMANDS:
            self.answers.popitem(last=False)
        metrics.COMMANDS.labels(answer.status).inc()
        self.publish([Publish(contract.CMD_RESULT, payload)])

    # --- the library's loop, corrected ---------------------------------------------------------

    async def route_message(self, raw_msg: Any) -> None:
        """Route one frame: calls to handlers, answers to the waiting call."""
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            code = "RpcFrameworkError" if self.version == V201 else "FormationViolation"
            await self._send_error("-1", code, "the message could not be read", exc)
            return
        if msg.message_type_id == MessageType.Call:
            metrics.request(msg.action)
            try:
                await self._handle_call(msg)
            except OCPPError as error:
                await self._send_error(msg.unique_id, error.code, error.description, error)
        else:
            self._response_queue.put_nowait(msg)

    async def _handle_call(self, msg: Any) -> None:
        """The library's ``_handle_call``, with the corrected error codes and its two costs
        removed (measured: 64 % of a MeterValues went to jsonschema, 18 % to re-deriving
        snake_case keys by regular expressions): compiled schemas (``schemas``), and key
        conversions computed once per key."""
        handlers = self.route_map.get(msg.action)
        if handlers is None or "_on_action" not in handlers:
            if msg.action in _KNOWN[self.version]:
                raise NotSupportedError(details={"cause": f"the bridge does not take {msg.action}"})
            raise OcppNotImplementedError(
                details={"cause": f"unknown action {str(msg.action)[:50]}"}
            )
        if not self.lenient:
            schemas.check(self.version, msg.action, msg.payload)
        if not isinstance(msg.payload, dict):
            raise FormatViolationError(details={"cause": "the payload is not an object"})
        try:
            response = handlers["_on_action"](**_snake(msg.payload))
            if inspect.isawaitable(response):
                response = await response
        except OCPPError:
            raise
        except Exception as exc:
            log.exception("%s: %s handler failed", self.device_id, msg.action)
            raise InternalError(details={"cause": type(exc).__name__}) from exc
        body = _body(response)
        if not self.lenient:
            schemas.check(self.version, msg.action, body, response=True)
        await self._send(msg.create_call_result(body).to_json())

    async def _send_error(
        self, unique_id: str, code: str, description: str, exc: Exception
    ) -> None:
        if self.version == V16:
            code = _V16_CODES.get(code, code)
        metrics.CALL_ERRORS.labels(code).inc()
        log.info("%s: CallError %s to %s: %s", self.device_id, code, unique_id, exc)
        await self._send(CallError(unique_id, code, description, {}).to_json())

    async def _send(self, message: str) -> None:
        self._sent = True
        await self._connection.send(message)

    async def run(self) -> None:
        """Serve the charger until its connection closes."""
        known = self.context.authorizations.find(self.device_id)
        if known is not None and known.list is not None:  # from an earlier connection
            self._queue_list_sync()
        worker = asyncio.create_task(self._run_jobs())
        try:
            await self.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            worker.cancel()

    async def close(self, reason: str) -> None:
        """Close the connection (a newer one of the same charger took over)."""
        self.superseded = True
        with contextlib.suppress(Exception):
            await self._connection.close(1000, reason)

    # --- jobs: calls to the charger, one at a time ---------------------------------------------

    async def _run_jobs(self) -> None:
        while True:
            job = await self.jobs.get()
            try:
                await job()
            except websockets.ConnectionClosed:
                return
            except Exception:
                log.exception("%s: job failed", self.device_id)

    async def _request(self, outgoing: Outgoing) -> Answer | None:
        """Make one call; its answer as a command result (None: the connection went)."""
        self._sent = False
        try:
            response = await self.call(
                outgoing.payload, suppress=False, skip_schema_validation=self.lenient
            )
        except OCPPError as exc:
            if not self._sent:  # the call itself broke the schema: never sent
                return Answer("rejected", None, f"bad_args: {exc.description}: {exc.details}")
            return Answer("error", None, f"{exc.code}: {exc.description}")
        except TimeoutError:
            if self._connection.state is not State.OPEN:
                return None
            return Answer("error", None, f"timeout: no answer to {outgoing.action}")
        return outgoing.read(response)

    # --- downlink: what the broker delivers for this charger -----------------------------------

    def on_downlink(self, channel: str, payload: bytes) -> None:
        """A message on one of the charger's followed topics (called on the loop)."""
        if not payload:
            return  # a retained message being cleared
        try:
            if channel == contract.CMD:
                command = contract.decode_command(payload, self.uplink.now_ms())
                self.jobs.put_nowait(lambda: self._command(command))
            elif channel == contract.CONFIG_DESIRED:
                self.desired = contract.decode_config(payload)
                self.desired_arrived.set()
                desired = self.desired
                self.jobs.put_nowait(lambda: self._apply_desired(desired))
            elif channel == contract.OTA:
                offer = contract.decode_ota(payload)
                self.jobs.put_nowait(lambda: self._offer(offer))
            elif channel == contract.AUTH_LIST:
                auth_list = contract.decode_auth_list(payload)
                self.context.authorizations.of(self.device_id).update(auth_list)
                if self._auth_list_arrived is not None:
                    self._auth_list_arrived.set()
                self._queue_list_sync()
            elif channel == contract.STATUS:
                self._check_takeover(payload)
        except contract.ContractError as exc:
            log.warning(
                "%s: %s message refused (%s): %.200r", self.device_id, channel, exc, payload
            )

    def _check_takeover(self, payload: bytes) -> None:
        if payload in self._statuses:
            return  # our own, echoed
        status = contract.decode_status(payload, self.uplink.now_ms())
        if status.state == "online" and status.ts is not None and status.ts >= self.started_ms:
            # Another bridge instance announced this charger after we did: the charger
            # reconnected there, and this socket is a leftover.
            log.info("%s: taken over by another bridge instance", self.device_id)
            self.context.spawn(self.close("taken over by another bridge instance"))

    async def _command(self, command: contract.Command) -> None:
        stored = self.answers.get(command.id)
        if stored is not None:
            self.publish([Publish(contract.CMD_RESULT, stored)])
            return
        if command.expired(self.uplink.now_ms()):
            self.answer(command.id, Answer("rejected", None, "expired"))
            return
        if command.name == "config.apply":
            await self._config_apply(command)
            return
        try:
            outgoing = to_call(command, self.uplink, self.family)
        except UnsupportedCommandError as exc:
            self.answer(command.id, Answer("rejected", None, exc.reason))
            return
        if command.name == "charging.start":
            # The charger may authorize the token it is asked to start with, and reports it in
            # its StartTransaction: the bridge accepts it (it is on no card list).
            token = remote_start_token(command.args)
            self.context.authorizations.of(self.device_id).remember_remote(token)
        answer = await self._request(outgoing)
        if answer is not None:
            self.answer(command.id, answer)

    async def _config_apply(self, command: contract.Command) -> None:
        version = command.args.get("version")
        if type(version) is not int:
            self.answer(command.id, Answer("rejected", None, "bad_args"))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONFIG_WAIT_S):
                while self.desired is None or self.desired.version < version:
                    self.desired_arrived.clear()
                    await self.desired_arrived.wait()
        outcome = self.config_outcomes.get(version)
        if outcome is None and self.desired is not None and self.desired.version >= version:
            outcome = await self._apply_desired(self.desired)
        if outcome is None:
            outcome = Answer("rejected", None, f"no desired document of version {version}")
        self.answer(command.id, outcome)

    async def _apply_desired(self, desired: contract.Config) -> Answer | None:
        """Set each desired setting over OCPP; report what is in force (contract 4.4)."""
        if desired.version in self.config_outcomes:
            return self.config_outcomes[desired.version]
        in_force: dict[str, Any] = {}
        refused: dict[str, str] = {}
        for key, value in desired.values.items():
            parameter = _setting(self.family, key)
            if parameter is None:
                refused[key] = "not an OCPP setting of this charger's family"
                continue
            try:
                outgoing = config_call(key, value, self.uplink, parameter)
            except UnsupportedCommandError as exc:
                refused[key] = exc.reason
                continue
            answer = await self._request(outgoing)
            if answer is None:
                return None
            if answer.status == "ok":
                in_force[key] = value
            else:
                refused[key] = answer.reason or answer.status
        self.publish(
            [
                Publish(
                    contract.CONFIG_REPORTED,
                    contract.encode_config(desired.version, in_force),
                    retain=True,
                )
            ]
        )
        if refused:
            why = "; ".join(f"{k}: {v}" for k, v in sorted(refused.items()))
            outcome = Answer("rejected", None, why)
        else:
            outcome = Answer("ok", None)
        self.config_outcomes[desired.version] = outcome
        return outcome

    async def _offer(self, offer: contract.Ota) -> None:
        if offer.version == self.uplink.firmware:
            self.publish(
                [
                    Publish(
                        contract.OTA_STATUS, contract.encode_ota_status(offer.version, "confirmed")
                    )
                ]
            )
            return
        if offer.version == self.offered_version:
            return  # contract 4.7: the same offer is not retried until it changes
        self.offered_version = offer.version
        self.uplink.ota_version = offer.version
        self.uplink.ota_progressed = False
        answer = await self._request(ota_call(offer, self.uplink))
        if answer is None or (answer.status == "ok" and self.uplink.ota_progressed):
            return  # gone, or the charger's own reports went out first: nothing to add
        state, reason = (
            ("downloading", None) if answer.status == "ok" else ("failed", answer.reason)
        )
        payload = contract.encode_ota_status(offer.version, state, reason=reason)
        self.publish([Publish(contract.OTA_STATUS, payload)])

    # --- the local authorization list on the charger ---------------------------------------------

    def _queue_list_sync(self) -> None:
        """Queue one check of the charger's list (more arrivals meanwhile: still one)."""
        if not self._sync_queued:
            self._sync_queued = True
            self.jobs.put_nowait(self._sync_local_list)

    async def _sync_local_list(self) -> None:
        """Send the list with SendLocalList when the charger's version differs (asked with
        GetLocalListVersion once per connection); report ``auth.list_applied``."""
        self._sync_queued = False
        authorizer = self.context.authorizations.find(self.device_id)
        if authorizer is None or authorizer.list is None or self._list_unsupported:
            return
        if not self._list_checked:
            answer = await self._request(get_local_list_version_call(self.version))
            if answer is None:
                return
            if answer.status == "error" and (answer.reason or "").startswith("timeout"):
                return  # a charger that does not answer: asked again on the next list
            self._list_checked = True
            if answer.status == "ok" and type((answer.result or {}).get("version")) is int:
                authorizer.on_charger = (answer.result or {})["version"]
                if authorizer.on_charger == -1 and self.version == V16:  # 1.6 5.9: no list
                    self._list_unsupported = True
                    self._list_failed(authorizer.list.version, "NotSupported")
                    return
            else:
                authorizer.on_charger = None  # unknown: send it
        wanted = authorizer.list
        if authorizer.in_sync() or wanted.version == self._list_failed_version:
            return
        outgoing, count = send_local_list_call(self.version, wanted)
        answer = await self._request(outgoing)
        if answer is None:
            return
        if answer.status == "ok":
            authorizer.on_charger = wanted.version
            data = {"version": wanted.version, "tokens": count}
            if count != len(wanted.tokens):
                data["left_out"] = len(wanted.tokens) - count  # longer than the version takes
            self.publish([self.uplink.event("auth.list_applied", data)])
            return
        reason = answer.reason or answer.status
        if reason.startswith(_NO_LOCAL_LIST):
            self._list_unsupported = True
        self._list_failed_version = wanted.version  # a new version, or a reconnect, retries
        self._list_failed(wanted.version, reason)

    def _list_failed(self, version: int, reason: str) -> None:
        data = {"version": version, "reason": reason[:MAX_REASON]}
        self.publish([self.uplink.event("auth.list_failed", data, "warning")])

    async def _verdict(self, token: str) -> Verdict:
        """How to answer ``token``: by the charger's list, once it is here (``AUTH_LIST_GRACE_S``
        after the connection at most); without one, Invalid."""
        memory = self.context.authorizations
        found = memory.find(self.device_id)
        if found is None or found.list is None:
            remaining = self._auth_grace_until - time.monotonic()
            if remaining > 0:
                if self._auth_list_arrived is None:
                    self._auth_list_arrived = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._auth_list_arrived.wait()
                found = memory.find(self.device_id)
        if found is None:
            return Verdict(INVALID)
        return found.verdict(token, self.uplink.now_ms())

    async def _certificate(self, csr: str) -> None:
        signer = self.context.signer
        assert signer is not None
        try:
            chain = signer.sign(csr, self.device_id)
        except ValueError as exc:
            self.publish(
                [self.uplink.event("certificate.refused", {"reason": str(exc)}, "warning")]
            )
            return
        command = contract.Command(
            "bridge-csr", "certificate.signed", {"certificate_chain": chain}, None
        )
        answer = await self._request(to_call(command, self.uplink, self.family))
        if answer is not None:
            data = {"status": answer.status, "reason": answer.reason}
            self.publish([self.uplink.event("certificate.installed", data)])

    # --- uplink: requests from the charger (never awaiting a call) -----------------------------

    @on("BootNotification")
    def on_boot_notification(self, **payload: Any) -> Any:
        with _refusing():
            boot, published = self.uplink.boot(payload)
        self.publish(published)
        self.context.recorder.booted(self.device_id, self.version, boot)
        return self._call_result.BootNotification(
            current_time=format_time(self.uplink.now_ms()),
            interval=self.context.heartbeat_interval,
            status="Accepted",
        )

    @on("Heartbeat")
    def on_heartbeat(self, **_payload: Any) -> Any:
        self.publish(self.uplink.heartbeat())
        return self._call_result.Heartbeat(current_time=format_time(self.uplink.now_ms()))

    @on("StatusNotification")
    def on_status_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.status_notification(payload))
        return self._call_result.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, **payload: Any) -> Any:
        with _refusing():
            token = token_of(payload)
        # 2.0.1 NoAuthorization asks for nothing: accepted.
        verdict = Verdict(ACCEPTED) if token is None else await self._verdict(token)
        self.publish(self.uplink.authorize(token, verdict.status, verdict.refusal))
        info = token_info(verdict, self.version)
        if self.version == V16:
            return result16.Authorize(id_tag_info=info)
        return result201.Authorize(id_token_info=info)

    @on("StartTransaction")
    async def on_start_transaction(self, **payload: Any) -> Any:
        with _refusing():
            number, published = self.uplink.start_transaction(payload)
        # A token not on the list is answered Invalid: the charger stops the transaction it
        # started (1.6 5.18); the cloud judges the session itself (contract 4.9).
        verdict = await self._verdict(str(payload["id_tag"]))
        self.publish(published)
        return result16.StartTransaction(
            transaction_id=number, id_tag_info=token_info(verdict, V16)
        )

    @on("StopTransaction")
    async def on_stop_transaction(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.stop_transaction(payload))
        if payload.get("id_tag"):
            verdict = await self._verdict(str(payload["id_tag"]))
            return result16.StopTransaction(id_tag_info=token_info(verdict, V16))
        return result16.StopTransaction()

    @on("MeterValues")
    def on_meter_values(self, **payload: Any) -> Any:
        with _refusing():
            before = self.uplink.dropped
            self.publish(self.uplink.meter_values(payload))
        if self.uplink.dropped != before:
            metrics.VALUES_DROPPED.inc(self.uplink.dropped - before)
        return self._call_result.MeterValues()

    @on("TransactionEvent")
    async def on_transaction_event(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.transaction_event(payload))
            token = token_of(payload)
        if token is not None:
            verdict = await self._verdict(token)
            return result201.TransactionEvent(id_token_info=token_info(verdict, V201))
        if payload.get("id_token"):  # NoAuthorization: nothing to judge
            return result201.TransactionEvent(id_token_info={"status": ACCEPTED})
        return result201.TransactionEvent()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.firmware_status(payload))
        return self._call_result.FirmwareStatusNotification()

    @on("NotifyEvent")
    def on_notify_event(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.notify_event(payload))
        return result201.NotifyEvent()

    @on("DataTransfer")
    def on_data_transfer(self, **payload: Any) -> Any:
        with _refusing():
            status, published = self.uplink.data_transfer(payload)
        self.publish(published)
        return self._call_result.DataTransfer(status=status)

    @on("SignCertificate")
    def on_sign_certificate(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.sign_certificate(payload))
        if self.context.signer is not None:
            csr = str(payload["csr"])
            self.jobs.put_nowait(lambda: self._certificate(csr))
        return self._call_result.SignCertificate(status="Accepted")

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.security_event(payload))
        return self._call_result.SecurityEventNotification()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.notice("diagnostics.status", payload))
        return result16.DiagnosticsStatusNotification()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.notice("log.status", payload))
        return result201.LogStatusNotification()

    @on("PublishFirmwareStatusNotification")
    def on_publish_firmware_status_notification(self, **payload: Any) -> Any:
        with _refusing():
            self.publish(self.uplink.notice("firmware.publish_status", payload))
        return result201.PublishFirmwareStatusNotification()


def _setting(family: Family | None, key: str) -> Family | None:
    """The family, when ``key`` is one of its OCPP-bound settings (else None)."""
    if family is None:
        return None
    try:
        parameter = family.parameter(key)
    except KeyError:
        return None
    if parameter.kind != "setting" or parameter.binding.kind != "ocpp":
        return None
    return family


class Charger16(BridgedCharger):
    """An OCPP 1.6J charger."""

    _call = call16
    _call_result = result16
    _ocpp_version = V16


class Charger201(BridgedCharger):
    """An OCPP 2.0.1 charging station."""

    _call = call201
    _call_result = result201
    _ocpp_version = V201
