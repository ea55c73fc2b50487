"""From the charger to the contract: what each OCPP request means as telemetry, status and
events, and what the bridge answers. I/O-free: methods take the ocpp library's payloads
(snake_case keys) and return the answer's fields and the contract messages to publish.

1.6 and 2.0.1 are normalised here: transaction ids become strings (1.6 integers, which the
bridge assigns, as decimal text), ``connectorId`` and ``evseId``+``connectorId`` become
``connector`` (and ``evse``), status enums keep their OCPP names (the family's
``connector_status`` enum holds both versions' values). Sessions follow the contract's
section 14: ``charging.started``/``charging.stopped`` carry the transaction id as ``session``,
the meter at the start, the duration, and the stop ``reason`` in the contract's words with the
OCPP one as ``ocpp_reason``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cloud.ocpp.meter import MeterMap, Reading, parse_time
from firmware.core import contract

V16 = "1.6"
V201 = "2.0.1"
MAX_INT32 = 2**31 - 1


def transaction_number(connector: int, ts_ms: int, meter_start: Any) -> int:
    """The 1.6 transaction id of a StartTransaction, derived from what it says rather than
    counted: a charger that never got the answer sends the same StartTransaction again (OCPP
    1.6 4.8, and its offline queue), to this or another bridge instance, and must get the same
    id so that the cloud keys both to one session (contract 14). Two different sessions of one
    connector never share a start time and a meter reading; a hash collision between them has
    odds of 1 in 2^31."""
    key = f"{connector}|{ts_ms}|{meter_start}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_INT32 + 1


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
NO_AUTHORIZATION = "NoAuthorization"  # 2.0.1 IdTokenEnumType: no token was needed


def stop_reason(ocpp_reason: str) -> str:
    """The contract's ``reason`` (section 14) for an OCPP stop reason."""
    return STOP_REASONS.get(ocpp_reason, "other")


def token_of(payload: Mapping[str, Any]) -> str | None:
    """The id token a request carries (1.6 ``id_tag``, 2.0.1 ``id_token.id_token``); None when
    it carries none, or when 2.0.1 says none was needed (``NoAuthorization``). An empty token
    is "" (judged Invalid; events leave it out: contract 14 ids have 1 to 64 characters)."""
    if payload.get("id_tag") is not None:
        return str(payload["id_tag"])
    id_token = payload.get("id_token")
    if not id_token or id_token.get("type") == NO_AUTHORIZATION:
        return None
    return str(id_token["id_token"])


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
    """One charger's session: counters, transactions, and the translation of its requests."""

    def __init__(
        self,
        device_id: str,
        version: str,
        meters: MeterMap,
        data_transfer: DataTransferRules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.version = version
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
            if transaction is not None:
                values.update(self._session_values(reading, transaction))
            if values:
                out.append(self.telemetry(reading.ts, values))
        return out

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

    # --- requests ----------------------------------------------------------------------------

    def boot(self, payload: Mapping[str, Any]) -> tuple[Boot, list[Publish]]:
        """BootNotification: the charger's identity; status online with its firmware."""
        if self.version == V16:
            boot = Boot(
                vendor=payload["charge_point_vendor"],
                model=payload["charge_point_model"],
                serial_number=payload.get("charge_point_serial_number")
                or payload.get("charge_box_serial_number"),
                firmware_version=payload.get("firmware_version"),
                reason=None,
            )
        else:
            station = payload["charging_station"]
            boot = Boot(
                vendor=station["vendor_name"],
                model=station["model"],
                serial_number=station.get("serial_number"),
                firmware_version=station.get("firmware_version"),
                reason=payload.get("reason"),
            )
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
        if self.version == V16:
            connector, evse = int(payload["connector_id"]), None
            state = payload["status"]
            error = payload.get("error_code")
            ts = parse_time(payload["timestamp"]) if payload.get("timestamp") else self.now_ms()
        else:
            connector, evse = int(payload["connector_id"]), int(payload["evse_id"])
            state = payload["connector_status"]
            error = None
            ts = parse_time(payload["timestamp"])
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

    def start_transaction(self, payload: Mapping[str, Any]) -> tuple[int, list[Publish]]:
        """1.6 StartTransaction: the bridge's transaction id, and ``charging.started``."""
        ts = parse_time(payload["timestamp"])
        number = transaction_number(int(payload["connector_id"]), ts, payload["meter_start"])
        transaction = Transaction(
            str(number),
            int(payload["connector_id"]),
            started_ms=ts,
            meter_start_wh=float(payload["meter_start"]),
            id_tag=token_of(payload) or None,
        )
        self.transactions[transaction.id] = transaction
        data = {
            "session": transaction.id,
            "transaction_id": transaction.id,
            "connector": transaction.connector,
            "id_tag": transaction.id_tag,
            "meter_start_wh": transaction.meter_start_wh,
            "reservation_id": payload.get("reservation_id"),
        }
        return number, [self.event("charging.started", data, ts=ts)]

    def stop_transaction(self, payload: Mapping[str, Any]) -> list[Publish]:
        """1.6 StopTransaction: its transaction data as telemetry, then ``charging.stopped``."""
        transaction_id = str(payload["transaction_id"])
        transaction = self.transactions.pop(transaction_id, None)
        ts = parse_time(payload["timestamp"])
        published = self._readings(payload.get("transaction_data") or [], transaction)
        reason = payload.get("reason") or "Local"  # 1.6 7.39: absent means Local
        data = self._stopped(
            transaction_id,
            transaction,
            ts,
            float(payload["meter_stop"]),
            reason,
            stop_token=token_of(payload) or None,
        )
        published.append(self.event("charging.stopped", data, ts=ts))
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

    def meter_values(self, payload: Mapping[str, Any]) -> list[Publish]:
        """MeterValues (1.6 4.7, 2.0.1 J01-J03): one telemetry sample per timestamp; during a
        transaction also its energy and duration so far."""
        transaction = None
        if self.version == V16:
            connector = int(payload["connector_id"])
            if payload.get("transaction_id") is not None:
                transaction = self._learn(str(payload["transaction_id"]), connector)
            elif connector > 0:
                transaction = self.on_connector(connector)
        else:
            evse = int(payload["evse_id"])
            transaction = next(
                (t for t in self.transactions.values() if t.evse == evse and evse > 0), None
            )
        return self._readings(payload["meter_value"], transaction)

    def transaction_event(self, payload: Mapping[str, Any]) -> list[Publish]:
        """2.0.1 TransactionEvent (E01-E03 start, E06-E09 stop, J02 meter values)."""
        info = payload["transaction_info"]
        transaction_id = str(info["transaction_id"])
        kind = payload["event_type"]
        ts = parse_time(payload["timestamp"])
        evse_info = payload.get("evse") or {}
        evse = evse_info.get("id")
        connector = int(evse_info.get("connector_id", 1)) if evse_info else 1
        token = token_of(payload) or None
        published: list[Publish] = []
        if kind == "Started":
            transaction = Transaction(
                transaction_id, connector, started_ms=ts, id_tag=token, evse=evse
            )
            self.transactions[transaction_id] = transaction
            readings = self.meters.readings(payload.get("meter_value") or [])
            energies = [r.values["energy_wh"] for r in readings if "energy_wh" in r.values]
            transaction.meter_start_wh = energies[0] if energies else None
            data = {
                "session": transaction_id,
                "transaction_id": transaction_id,
                "connector": connector,
                "evse": evse,
                "id_tag": token,
                "meter_start_wh": transaction.meter_start_wh,
                "trigger": payload.get("trigger_reason"),
                "remote_start_id": info.get("remote_start_id"),
            }
            published.append(self.event("charging.started", data, ts=ts))
            published += self._readings(payload.get("meter_value") or [], transaction)
            return published
        transaction = self.transactions.get(transaction_id) or self._learn(
            transaction_id, connector, evse
        )
        if token and transaction.id_tag is None:
            transaction.id_tag = token  # E02: the token came after the cable
        published += self._readings(payload.get("meter_value") or [], transaction)
        if kind == "Updated":
            if info.get("charging_state"):
                data = {
                    "session": transaction_id,
                    "transaction_id": transaction_id,
                    "state": info["charging_state"],
                    "trigger": payload.get("trigger_reason"),
                }
                published.append(self.event("charging.state", data, ts=ts))
            return published
        # Ended. E09: the cable unplugged at the EV side ends it with EVDisconnected.
        self.transactions.pop(transaction_id, None)
        energies = [
            r.values["energy_wh"]
            for r in self.meters.readings(payload.get("meter_value") or [])
            if "energy_wh" in r.values
        ]
        reason = info.get("stopped_reason") or "Local"  # 2.0.1 E: absent means Local
        data = self._stopped(
            transaction_id, transaction, ts, energies[-1] if energies else None, reason, token
        )
        data["trigger"] = payload.get("trigger_reason")
        published.append(self.event("charging.stopped", data, ts=ts))
        return published

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

    def notify_event(self, payload: Mapping[str, Any]) -> list[Publish]:
        """2.0.1 NotifyEvent (N07 alerts, N08 periodic): one event per EventData."""
        published = []
        for item in payload["event_data"]:
            component = item.get("component") or {}
            variable = item.get("variable") or {}
            data = {
                "event_id": item.get("event_id"),
                "trigger": item.get("trigger"),
                "component": component.get("name"),
                "evse": (component.get("evse") or {}).get("id"),
                "variable": variable.get("name"),
                "value": item.get("actual_value"),
                "notification": item.get("event_notification_type"),
                "cleared": item.get("cleared"),
                "tech_code": item.get("tech_code"),
            }
            severity = "warning" if item.get("trigger") == "Alerting" else "info"
            ts = parse_time(item["timestamp"])
            published.append(self.event("ocpp.event", data, severity, ts))
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
