"""From the charger to the contract: what each OCPP request means as telemetry, status and
events, and what the bridge answers. I/O-free: methods take the ocpp library's payloads
(snake_case keys) and return the answer's fields and the contract messages to publish.

This is the shared core: ``Uplink`` holds what every version translates alike; a version's
subclass (``cloud.ocpp.v16.uplink``, ``cloud.ocpp.v201.uplink``) sets ``version`` and reads
what its messages spell differently, onto the same normalised forms: transaction ids become
strings (1.6 integers, which the bridge assigns, as decimal text), ``connectorId`` and
``evseId``+``connectorId`` become ``connector`` (and ``evse``), status enums keep their OCPP
names (the family's ``connector_status`` enum holds both versions' values).

Sessions follow the contract's section 14: ``charging.started``/``charging.stopped`` carry the
transaction id as ``session``, the meter at the start, the duration, and the stop ``reason`` in
the contract's words (``stop_reason``: the bridge translates OCPP's, the cloud knows only the
contract's) with the OCPP one as ``ocpp_reason``. A start without a meter value takes the first
energy register sampled in the transaction, reported as ``charging.meter_start``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from cloud.ocpp.meter import MeterMap, Reading, parse_time
from firmware.core import contract

# Stop reasons (1.6 7.39 Reason, 2.0.1 ReasonEnumType) in the contract's words (section 14).
# Absent, the specs mean Local; what is not listed here (EnergyLimitReached, SOCLimitReached,
# Timeout, Other, anything newer) is ``other``.
STOP_REASONS = {
    "Remote": "remote",
    "UnlockCommand": "remote",  # the central system's UnlockConnector ended it
    "Local": "local",
    "MasterPass": "local",  # 2.0.1: a master card at the charger
    "LocalOutOfCredit": "local",
    "EVDisconnected": "ev_disconnected",  # E09: the cable unplugged at the EV side
    "StoppedByEV": "ev_disconnected",
    "TimeLimitReached": "schedule_end",  # a charging profile's time limit
    "EmergencyStop": "fault",
    "GroundFault": "fault",
    "OvercurrentFault": "fault",
    "PowerQuality": "fault",
    "PowerLoss": "power_loss",
    "Reboot": "power_loss",
    "HardReset": "power_loss",
    "SoftReset": "power_loss",
    "ImmediateReset": "power_loss",
    "DeAuthorized": "deauthorized",
}


def stop_reason(ocpp_reason: str) -> str:
    """The contract's ``reason`` (section 14) for an OCPP stop reason."""
    return STOP_REASONS.get(ocpp_reason, "other")


@dataclasses.dataclass(frozen=True)
class Publish:
    """A contract message to publish on ``af/{device}/{channel}`` for the charger."""

    channel: str
    payload: bytes
    retain: bool = False


@dataclasses.dataclass
class Transaction:
    """A charging session as the bridge saw it start (or learnt of it later)."""

    id: str
    connector: int
    started_ms: int | None = None
    meter_start_wh: float | None = None
    id_tag: str | None = None
    evse: int | None = None
    # The start event carried no meter value (2.0.1 E01-E02 allow it): the first energy
    # register sampled in the transaction (J02) is its start. Only a transaction the bridge
    # saw start waits so; of one learnt later, the bridge cannot tell the first value.
    awaiting_meter_start: bool = False


@dataclasses.dataclass(frozen=True)
class Boot:
    """What a BootNotification says about the charger (1.6 4.2, 2.0.1 B01)."""

    vendor: str
    model: str
    serial_number: str | None
    firmware_version: str | None
    reason: str | None


@dataclasses.dataclass(frozen=True)
class DataTransferRules:
    """Which vendor/message pairs the bridge takes (``ocpp_data_transfer``)."""

    accepted: frozenset[tuple[str, str]]

    @classmethod
    def parse(cls, text: str) -> DataTransferRules:
        """From ``vendor/message,vendor/*``."""
        pairs = set()
        for item in text.split(","):
            vendor, _, message = item.strip().partition("/")
            if vendor:
                pairs.add((vendor, message or "*"))
        return cls(frozenset(pairs))

    def status(self, vendor_id: str, message_id: str | None) -> str:
        """``Accepted``, ``UnknownVendorId`` or ``UnknownMessageId`` (1.6 4.3, 2.0.1 P01)."""
        vendors = {vendor for vendor, _ in self.accepted}
        if vendor_id not in vendors:
            return "UnknownVendorId"
        if (vendor_id, "*") in self.accepted or (vendor_id, message_id or "") in self.accepted:
            return "Accepted"
        return "UnknownMessageId"


class Uplink:
    """One charger's session: counters, transactions, and the translation of its requests;
    a version's subclass sets ``version`` and overrides what its messages spell differently."""

    version: ClassVar[str]

    def __init__(
        self,
        device_id: str,
        meters: MeterMap,
        data_transfer: DataTransferRules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.meters = meters
        self.transfers = data_transfer
        self.clock = clock
        self.telemetry_seq = 0
        self.event_seq = 0
        self.transactions: dict[str, Transaction] = {}
        self.firmware: str | None = None
        self.ota_version: str | None = None  # the offer being installed, if any
        self.ota_progressed = False  # the charger reported on it already
        self.dropped = 0  # sampled values no parameter of the family takes

    # --- helpers -------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The bridge's clock, in ms."""
        return int(self.clock() * 1000)

    def status(self, state: str, fw: str | None = None, schema: str | None = None) -> Publish:
        """The retained status message (contract 4.2)."""
        payload = contract.encode_status(state, self.now_ms(), fw, schema)
        return Publish(contract.STATUS, payload, retain=True)

    def event(
        self, type_: str, data: Mapping[str, Any], severity: str = "info", ts: int | None = None
    ) -> Publish:
        """An event (contract 4.3), numbered by this session's counter."""
        self.event_seq += 1
        clean = {k: v for k, v in data.items() if v is not None}
        payload = contract.encode_event(ts or self.now_ms(), self.event_seq, type_, severity, clean)
        return Publish(contract.EVENTS, payload)

    def telemetry(self, ts: int, values: Mapping[str, Any]) -> Publish:
        """A telemetry sample of the master node (contract 4.1)."""
        self.telemetry_seq += 1
        return Publish(
            contract.TELEMETRY, contract.encode_telemetry(ts, self.telemetry_seq, dict(values))
        )

    def _readings(
        self, meter_values: Iterable[Mapping[str, Any]], transaction: Transaction | None
    ) -> list[Publish]:
        out = []
        for reading in self.meters.readings(meter_values):
            self.dropped += len(reading.dropped)
            values = dict(reading.values)
            first = None
            if transaction is not None:
                first = self._first_meter_value(reading, transaction)
                values.update(self._session_values(reading, transaction))
            if values:
                out.append(self.telemetry(reading.ts, values))
            if first is not None:
                out.append(first)
        return out

    def _first_meter_value(self, reading: Reading, transaction: Transaction) -> Publish | None:
        """``charging.meter_start`` when this reading holds the first energy register of a
        transaction whose start had none (OCPP 2.0.1 J02, E01-E02; contract 14). The start
        is kept in the cloud's record of the session, which fills a missing start once: the
        bridge forgets its transactions when the charger reconnects, the record does not."""
        energy = reading.values.get("energy_wh")
        if not transaction.awaiting_meter_start or energy is None:
            return None
        transaction.awaiting_meter_start = False
        transaction.meter_start_wh = energy
        data = {
            "session": transaction.id,
            "transaction_id": transaction.id,
            "connector": transaction.connector,
            "evse": transaction.evse,
            "meter_start_wh": energy,
        }
        return self.event("charging.meter_start", data, ts=reading.ts)

    @staticmethod
    def _session_values(reading: Reading, transaction: Transaction) -> dict[str, float]:
        values: dict[str, float] = {}
        energy = reading.values.get("energy_wh")
        if energy is not None and transaction.meter_start_wh is not None:
            values["session_energy_wh"] = max(0.0, energy - transaction.meter_start_wh)
        if transaction.started_ms is not None:
            values["session_s"] = float(max(0, (reading.ts - transaction.started_ms) // 1000))
        return values

    def on_connector(self, connector: int) -> Transaction | None:
        """The running transaction of a connector, if the bridge knows one."""
        for transaction in self.transactions.values():
            if transaction.connector == connector:
                return transaction
        return None

    def _learn(self, transaction_id: str, connector: int, evse: int | None = None) -> Transaction:
        """The transaction with this id; one the bridge did not see start (a reconnect) is
        learnt from the messages that name it."""
        found = self.transactions.get(transaction_id)
        if found is None:
            found = Transaction(transaction_id, connector, evse=evse)
            self.transactions[transaction_id] = found
        return found

    # --- what each version spells its own way (overridden by the version's subclass) ----------

    def token_of(self, payload: Mapping[str, Any]) -> str | None:
        """The id token a request carries; None when it carries none (or needs none). An
        empty token is "" (judged Invalid; events leave it out: contract 14 ids have 1 to 64
        characters)."""
        raise NotImplementedError

    def read_boot(self, payload: Mapping[str, Any]) -> Boot:
        """What a BootNotification says about the charger."""
        raise NotImplementedError

    def read_status(
        self, payload: Mapping[str, Any]
    ) -> tuple[int, int | None, str, str | None, int]:
        """A StatusNotification's connector, EVSE, status, error code and time (ms)."""
        raise NotImplementedError

    def meter_values(self, payload: Mapping[str, Any]) -> list[Publish]:
        """MeterValues: one telemetry sample per timestamp; during a transaction also its
        energy and duration so far."""
        raise NotImplementedError

    # --- requests ----------------------------------------------------------------------------

    def boot(self, payload: Mapping[str, Any]) -> tuple[Boot, list[Publish]]:
        """BootNotification: the charger's identity; status online with its firmware."""
        boot = self.read_boot(payload)
        self.firmware = boot.firmware_version or self.firmware
        data = {
            "vendor": boot.vendor,
            "model": boot.model,
            "serial_number": boot.serial_number,
            "firmware_version": boot.firmware_version,
            "reason": boot.reason,
            "ocpp": self.version,
        }
        published = [self.status("online", fw=self.firmware), self.event("ocpp.boot", data)]
        if self.ota_version is not None and self.firmware == self.ota_version:
            # Rebooted into the offered image: the update is done (contract 4.7 step 3).
            payload_ = contract.encode_ota_status(self.ota_version, "confirmed")
            published.append(Publish(contract.OTA_STATUS, payload_))
            self.ota_version = None
        return boot, published

    def heartbeat(self) -> list[Publish]:
        """Heartbeat: the charger is alive (last seen, through the status worker)."""
        return [self.status("online", fw=self.firmware)]

    def status_notification(self, payload: Mapping[str, Any]) -> list[Publish]:
        """StatusNotification: the connector's state as telemetry (``connector_status``) and an
        event carrying connector, error code and vendor details."""
        connector, evse, state, error, ts = self.read_status(payload)
        faulted = state == "Faulted" or (error not in (None, "NoError"))
        data = {
            "connector": connector,
            "evse": evse,
            "status": state,
            "error_code": error,
            "info": payload.get("info"),
            "vendor_error_code": payload.get("vendor_error_code"),
        }
        published = [self.event("connector.status", data, "error" if faulted else "info", ts)]
        if connector > 0:  # 1.6: connector 0 is the charge point as a whole
            published.insert(0, self.telemetry(ts, {"connector_status": state}))
        return published

    def authorize(self, token: str | None, status: str, refusal: str | None) -> list[Publish]:
        """Authorize: the event ``authorize`` records who asked and the answer; a refused token
        is also ``authorization.refused`` (contract 14: ``unknown`` or ``expired``). Neither
        version's Authorize names a connector."""
        token = token or None
        published = [self.event("authorize", {"id_tag": token, "status": status})]
        if refusal is not None and token is not None:
            data = {"id_tag": token, "reason": refusal}
            published.append(self.event("authorization.refused", data, "warning"))
        return published

    @staticmethod
    def _stopped(
        transaction_id: str,
        transaction: Transaction | None,
        ts: int,
        meter_stop: float | None,
        ocpp_reason: str,
        stop_token: str | None = None,
    ) -> dict[str, Any]:
        """``charging.stopped`` data (contract 14); what the bridge did not see (a session
        that started before this connection) is left out."""
        connector = None
        energy = None
        duration = None
        start_token = None
        if transaction is not None:
            connector = transaction.connector
            start_token = transaction.id_tag
            if meter_stop is not None and transaction.meter_start_wh is not None:
                energy = max(0.0, meter_stop - transaction.meter_start_wh)
            if transaction.started_ms is not None:
                duration = max(0, (ts - transaction.started_ms) // 1000)
        # id_tag is the token of the start (contract 14); a card that stopped the session
        # and is not that one is kept as stop_id_tag.
        stop_other = stop_token if start_token is not None and stop_token != start_token else None
        return {
            "session": transaction_id,
            "transaction_id": transaction_id,
            "connector": connector,
            "evse": transaction.evse if transaction else None,
            "id_tag": start_token or stop_token,
            "stop_id_tag": stop_other,
            "meter_start_wh": transaction.meter_start_wh if transaction else None,
            "meter_stop_wh": meter_stop,
            "energy_wh": energy,
            "duration_s": duration,
            "reason": stop_reason(ocpp_reason),
            "ocpp_reason": ocpp_reason,
        }

    def firmware_status(self, payload: Mapping[str, Any]) -> list[Publish]:
        """FirmwareStatusNotification: an event, and ``ota/status`` while an offer is being
        installed (contract 4.8)."""
        state = payload["status"]
        failed = state in _FIRMWARE_FAILED
        data = {"status": state, "request_id": payload.get("request_id")}
        published = [self.event("firmware.status", data, "error" if failed else "info")]
        if self.ota_version is not None and state in _OTA_STATES:
            self.ota_progressed = True
            ota_state = _OTA_STATES[state]
            reason = state if ota_state == "failed" else None
            payload_ = contract.encode_ota_status(self.ota_version, ota_state, reason=reason)
            published.append(Publish(contract.OTA_STATUS, payload_))
            if ota_state == "failed":
                self.ota_version = None
        return published

    def data_transfer(self, payload: Mapping[str, Any]) -> tuple[str, list[Publish]]:
        """DataTransfer from the charger (1.6 4.3, 2.0.1 P02): accepted pairs become events."""
        vendor, message = payload["vendor_id"], payload.get("message_id")
        status = self.transfers.status(vendor, message)
        if status != "Accepted":
            return status, []
        data = {"vendor_id": vendor, "message_id": message, "data": payload.get("data")}
        return status, [self.event("ocpp.data_transfer", data)]

    def sign_certificate(self, payload: Mapping[str, Any]) -> list[Publish]:
        """SignCertificate (2.0.1 A02/A03, 1.6 security extension): the CSR, as an event."""
        data = {"csr": payload["csr"], "certificate_type": payload.get("certificate_type")}
        return [self.event("certificate.sign_requested", data)]

    def security_event(self, payload: Mapping[str, Any]) -> list[Publish]:
        """SecurityEventNotification: a warning event."""
        data = {"type": payload["type"], "tech_info": payload.get("tech_info")}
        return [
            self.event("ocpp.security_event", data, "warning", parse_time(payload["timestamp"]))
        ]

    def notice(self, type_: str, payload: Mapping[str, Any]) -> list[Publish]:
        """Any other notification (diagnostics, logs, published firmware): an event."""
        return [self.event(type_, dict(payload))]


_FIRMWARE_FAILED = frozenset(
    {"DownloadFailed", "InstallationFailed", "InstallVerificationFailed", "InvalidSignature"}
)
# FirmwareStatus (1.6 7.25, 2.0.1 3.36) -> contract 4.8 OTA state.
_OTA_STATES = {
    "DownloadScheduled": "downloading",
    "Downloading": "downloading",
    "DownloadPaused": "downloading",
    "Downloaded": "verifying",
    "SignatureVerified": "verifying",
    "InstallScheduled": "verifying",
    "Installing": "verifying",
    "InstallRebooting": "installed",
    "Installed": "installed",
    "DownloadFailed": "failed",
    "InstallationFailed": "failed",
    "InstallVerificationFailed": "failed",
    "InvalidSignature": "failed",
}
