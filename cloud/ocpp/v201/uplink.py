"""OCPP 2.0.1 uplink: what a 2.0.1 station's requests spell their own way, read into the
shared core's normalised forms (``cloud.ocpp.uplink``). I/O-free.

2.0.1 stations number their own transactions (strings) and report them with TransactionEvent;
an EVSE holds the connectors, and NotifyEvent carries the device model's events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud.ocpp.meter import parse_time
from cloud.ocpp.uplink import Boot, Publish, Transaction, Uplink

VERSION = "2.0.1"
NO_AUTHORIZATION = "NoAuthorization"  # IdTokenEnumType: no token was needed


class Uplink201(Uplink):
    """A 2.0.1 station's requests, translated."""

    version = VERSION

    def token_of(self, payload: Mapping[str, Any]) -> str | None:
        """The ``id_token.id_token`` a request carries; None when it carries none, or when it
        says none was needed (``NoAuthorization``)."""
        id_token = payload.get("id_token")
        if not id_token or id_token.get("type") == NO_AUTHORIZATION:
            return None
        return str(id_token["id_token"])

    def read_boot(self, payload: Mapping[str, Any]) -> Boot:
        """BootNotificationRequest (B01): the station's identity and the boot reason."""
        station = payload["charging_station"]
        return Boot(
            vendor=station["vendor_name"],
            model=station["model"],
            serial_number=station.get("serial_number"),
            firmware_version=station.get("firmware_version"),
            reason=payload.get("reason"),
        )

    def read_status(
        self, payload: Mapping[str, Any]
    ) -> tuple[int, int | None, str, str | None, int]:
        """StatusNotificationRequest (G01): an EVSE's connector, no error code (faults come
        with NotifyEvent)."""
        connector, evse = int(payload["connector_id"]), int(payload["evse_id"])
        return connector, evse, payload["connector_status"], None, parse_time(payload["timestamp"])

    def meter_values(self, payload: Mapping[str, Any]) -> list[Publish]:
        """MeterValuesRequest (J01): of the EVSE's running transaction, if any (EVSE 0 is the
        station as a whole)."""
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
        token = self.token_of(payload) or None
        published: list[Publish] = []
        if kind == "Started":
            transaction = Transaction(
                transaction_id, connector, started_ms=ts, id_tag=token, evse=evse
            )
            self.transactions[transaction_id] = transaction
            readings = self.meters.readings(payload.get("meter_value") or [])
            energies = [r.values["energy_wh"] for r in readings if "energy_wh" in r.values]
            transaction.meter_start_wh = energies[0] if energies else None
            # E01-E02: a Started event may carry no meter value; J02: the first one sampled
            # in the transaction is then its start (``charging.meter_start``).
            transaction.awaiting_meter_start = transaction.meter_start_wh is None
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
