"""One charger's session over a corrected ``ChargePoint`` (``connection``), shared by every OCPP
version. A version (``cloud.ocpp.v16``, ``cloud.ocpp.v201``) subclasses ``BridgedCharger``: it
sets the class attributes (call modules, uplink class, downlink table) and holds only what it
spells its own way, as the library's version classes do. No code here asks for the version.

The library's receive loop is sequential: a handler that awaited a call to the charger would
wait for the answer that loop can never read. Handlers here never call: commands and
follow-ups go through one job queue per charger, run by a task of their own, one at a time.
Id tokens are judged by the charger's local authorization list (``authorization``), which the
bridge also keeps on the charger with SendLocalList, as a job like the commands.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import websockets
from ocpp.routing import on

from cloud.ocpp import UnsupportedCommandError, metrics
from cloud.ocpp.authorization import ACCEPTED, INVALID, Verdict
from cloud.ocpp.connection import OcppConnection, refusing
from cloud.ocpp.context import SessionContext
from cloud.ocpp.downlink import (
    Answer,
    Outgoing,
    Translate,
    config_call,
    ocpp_setting,
    ota_call,
    remote_start_token,
    to_call,
)
from cloud.ocpp.meter import MeterMap, format_time
from cloud.ocpp.records import Records
from cloud.ocpp.registry import Admission
from cloud.ocpp.uplink import Publish, Uplink
from cloud.pki import PkiError
from firmware.core import contract
from parameters import Family

log = logging.getLogger(__name__)

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


class BridgedCharger(OcppConnection):
    """A charger's session; a version's subclass (``Charger16``, ``Charger201``) sets the class
    attributes and adds the handlers of the requests only its version has."""

    subprotocol: ClassVar[str]  # the WebSocket subprotocol (OCPP-J 1.6 3.1.2, 2.0.1 part 4)
    _uplink_class: ClassVar[type[Uplink]]
    _commands: ClassVar[Mapping[str, Translate]]  # contract command -> the version's call
    # GetLocalListVersion's answer for "keeps no list", where the version has one (1.6 5.9).
    _no_list_version: ClassVar[int | None] = None

    def __init__(
        self,
        connection: Any,
        admission: Admission,
        context: SessionContext,
        family: Family | None,
        meters: MeterMap,
    ) -> None:
        super().__init__(
            admission.device_id, connection, context.call_timeout, lenient=admission.lenient
        )
        self.version = self._ocpp_version
        self.context = context
        self.family = family
        self.uplink = self._uplink_class(self.device_id, meters, context.transfers)
        self.uplink.firmware = admission.firmware_version
        self.started_ms = self.uplink.now_ms()
        self.superseded = False
        self.jobs: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
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

    # --- what each version spells its own way (overridden by the version's subclass) ---------

    def _token_info(self, verdict: Verdict) -> dict[str, Any]:
        """The version's IdTagInfo / IdTokenInfo for ``verdict``."""
        raise NotImplementedError

    def _authorized(self, info: dict[str, Any]) -> Any:
        """The version's answer to Authorize, carrying ``info``."""
        raise NotImplementedError

    def _list_version_call(self) -> Outgoing:
        """The version's GetLocalListVersion; its result is ``{"version": N}``."""
        raise NotImplementedError

    def _send_list_call(self, auth_list: contract.AuthList) -> tuple[Outgoing, int]:
        """The version's Full SendLocalList of ``auth_list``, and how many tokens it carries."""
        raise NotImplementedError

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
        self.context.answers.keep(self.device_id, command_id, payload)
        metrics.COMMANDS.labels(answer.status).inc()
        self.publish([Publish(contract.CMD_RESULT, payload)])

    # --- the connection's life, and its jobs: calls to the charger, one at a time -----------

    async def run(self) -> None:
        """Serve the charger until its connection closes."""
        known = self.context.authorizations.find(self.device_id)
        if known is not None and known.list is not None:  # from an earlier connection
            self._queue_list_sync()
        if self.context.records is not None:
            self.context.spawn(self._queued_commands(self.context.records))
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

    async def _run_jobs(self) -> None:
        while True:
            job = await self.jobs.get()
            try:
                await job()
            except websockets.ConnectionClosed:
                return
            except Exception:
                log.exception("%s: job failed", self.device_id)

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

    async def _queued_commands(self, records: Records) -> None:
        """The commands sent while the charger was held by no bridge (the broker dropped them:
        no subscriber), read from the records and run as if delivered now (``records``)."""
        try:
            queued = await asyncio.to_thread(records.queued, self.device_id)
        except Exception:  # the records are away: commands time out as they did before
            log.exception("%s: reading its queued commands failed", self.device_id)
            return
        for command in queued:
            self.jobs.put_nowait(functools.partial(self._command, command))
        if queued:
            log.info("%s: %d queued command(s) to deliver", self.device_id, len(queued))

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
        stored = self.context.answers.get(self.device_id, command.id)
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
            outgoing = to_call(self._commands, self.version, command, self.uplink, self.family)
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
            parameter = ocpp_setting(self.family, key)
            if parameter is None:
                refused[key] = "not an OCPP setting of this charger's family"
                continue
            try:
                outgoing = config_call(self._commands, key, value, self.uplink, parameter)
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
        answer = await self._request(ota_call(self._commands, offer, self.uplink))
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
            answer = await self._request(self._list_version_call())
            if answer is None:
                return
            if answer.status == "error" and (answer.reason or "").startswith("timeout"):
                return  # a charger that does not answer: asked again on the next list
            self._list_checked = True
            if answer.status == "ok" and type((answer.result or {}).get("version")) is int:
                authorizer.on_charger = (answer.result or {})["version"]
                no_list = self._no_list_version
                if no_list is not None and authorizer.on_charger == no_list:
                    self._list_unsupported = True
                    self._list_failed(authorizer.list.version, "NotSupported")
                    return
            else:
                authorizer.on_charger = None  # unknown: send it
        wanted = authorizer.list
        if authorizer.in_sync() or wanted.version == self._list_failed_version:
            return
        outgoing, count = self._send_list_call(wanted)
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
        verdict = Verdict(INVALID) if found is None else found.verdict(token, self.uplink.now_ms())
        if not verdict.accepted and await self._remote_start(token):
            return Verdict(ACCEPTED)
        return verdict

    async def _remote_start(self, token: str) -> bool:
        """Whether the cloud asked this charger to start with ``token`` (the records know it,
        whichever bridge sent the start: ``records``); remembered here once found."""
        records = self.context.records
        if records is None:
            return False
        try:
            found = await asyncio.to_thread(records.remote_start, self.device_id, token)
        except Exception:  # the records are away: the token is judged by the list alone
            log.exception("%s: looking up a remote-start token failed", self.device_id)
            return False
        if found:
            self.context.authorizations.of(self.device_id).remember_remote(token)
        return found

    async def _certificate(self, csr: str) -> None:
        signer = self.context.signer
        assert signer is not None
        try:
            # The records: off the loop, as every database call of the bridge.
            chain = await asyncio.to_thread(signer.sign, csr, self.device_id)
        except PkiError as exc:
            self.publish(
                [self.uplink.event("certificate.refused", {"reason": str(exc)}, "warning")]
            )
            return
        except Exception:  # the records are away: the charger may send its CSR again
            log.exception("%s: signing a CSR failed", self.device_id)
            self.publish(
                [
                    self.uplink.event(
                        "certificate.refused",
                        {"reason": "the CSR could not be signed now"},
                        "warning",
                    )
                ]
            )
            return
        command = contract.Command(
            "bridge-csr", "certificate.signed", {"certificate_chain": chain}, None
        )
        outgoing = to_call(self._commands, self.version, command, self.uplink, self.family)
        answer = await self._request(outgoing)
        if answer is not None:
            data = {"status": answer.status, "reason": answer.reason}
            self.publish([self.uplink.event("certificate.installed", data)])

    # --- uplink: requests from the charger (never awaiting a call) -----------------------------

    @on("BootNotification")
    def on_boot_notification(self, **payload: Any) -> Any:
        """BootNotification (1.6 4.2, 2.0.1 B01): accepted, with the heartbeat interval."""
        with refusing():
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
        """Heartbeat (1.6 4.6, 2.0.1 G02): the bridge's time."""
        self.publish(self.uplink.heartbeat())
        return self._call_result.Heartbeat(current_time=format_time(self.uplink.now_ms()))

    @on("StatusNotification")
    def on_status_notification(self, **payload: Any) -> Any:
        """StatusNotification (1.6 4.9, 2.0.1 G01): telemetry and an event."""
        with refusing():
            self.publish(self.uplink.status_notification(payload))
        return self._call_result.StatusNotification()

    @on("Authorize")
    async def on_authorize(self, **payload: Any) -> Any:
        """Authorize (1.6 4.1, 2.0.1 C01): the token's verdict by the local list."""
        with refusing():
            token = self.uplink.token_of(payload)
        # 2.0.1 NoAuthorization asks for nothing: accepted.
        verdict = Verdict(ACCEPTED) if token is None else await self._verdict(token)
        self.publish(self.uplink.authorize(token, verdict.status, verdict.refusal))
        return self._authorized(self._token_info(verdict))

    @on("MeterValues")
    def on_meter_values(self, **payload: Any) -> Any:
        """MeterValues (1.6 4.7, 2.0.1 J01/J02): telemetry; unmapped values are counted."""
        with refusing():
            before = self.uplink.dropped
            self.publish(self.uplink.meter_values(payload))
        if self.uplink.dropped != before:
            metrics.VALUES_DROPPED.inc(self.uplink.dropped - before)
        return self._call_result.MeterValues()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **payload: Any) -> Any:
        """FirmwareStatusNotification (1.6 4.5, 2.0.1 L01): an event and the OTA status."""
        with refusing():
            self.publish(self.uplink.firmware_status(payload))
        return self._call_result.FirmwareStatusNotification()

    @on("DataTransfer")
    def on_data_transfer(self, **payload: Any) -> Any:
        """DataTransfer (1.6 4.3, 2.0.1 P02): accepted vendor/message pairs become events."""
        with refusing():
            status, published = self.uplink.data_transfer(payload)
        self.publish(published)
        return self._call_result.DataTransfer(status=status)

    @on("SignCertificate")
    def on_sign_certificate(self, **payload: Any) -> Any:
        """SignCertificate (2.0.1 A02/A03, 1.6 security extension): signed by a job."""
        with refusing():
            self.publish(self.uplink.sign_certificate(payload))
        if self.context.signer is not None:
            csr = str(payload["csr"])
            self.jobs.put_nowait(lambda: self._certificate(csr))
        return self._call_result.SignCertificate(status="Accepted")

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **payload: Any) -> Any:
        """SecurityEventNotification: a warning event."""
        with refusing():
            self.publish(self.uplink.security_event(payload))
        return self._call_result.SecurityEventNotification()
