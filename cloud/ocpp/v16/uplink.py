"""OCPP 1.6J uplink: what a 1.6 charger's requests spell their own way, read into the shared
core's normalised forms (``cloud.ocpp.uplink``). I/O-free.

1.6 numbers transactions at the central system: the bridge answers StartTransaction with an id
derived from the request (``transaction_number``), which later messages name as an integer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from cloud.ocpp.meter import parse_time
from cloud.ocpp.uplink import Boot, Publish, Transaction, Uplink

VERSION = "1.6"
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


class Uplink16(Uplink):
    """A 1.6 charger's requests, translated."""

    version = VERSION

    def token_of(self, payload: Mapping[str, Any]) -> str | None:
        """The ``id_tag`` (1.6 IdToken, CiString20) a request carries, if any."""
        if payload.get("id_tag") is not None:
            return str(payload["id_tag"])
        return None

    def read_boot(self, payload: Mapping[str, Any]) -> Boot:
        """BootNotification.req (1.6 4.2): no boot reason in 1.6."""
        return Boot(
            vendor=payload["charge_point_vendor"],
            model=payload["charge_point_model"],
            serial_number=payload.get("charge_point_serial_number")
            or payload.get("charge_box_serial_number"),
            firmware_version=payload.get("firmware_version"),
            reason=None,
        )

    def read_status(
        self, payload: Mapping[str, Any]
    ) -> tuple[int, int | None, str, str | None, int]:
        """StatusNotification.req (1.6 4.9): a connector (0 is the charge point as a whole),
        an error code, and a timestamp that may be absent."""
        ts = parse_time(payload["timestamp"]) if payload.get("timestamp") else self.now_ms()
        return int(payload["connector_id"]), None, payload["status"], payload.get("error_code"), ts

    def meter_values(self, payload: Mapping[str, Any]) -> list[Publish]:
        """MeterValues.req (1.6 4.7): of the named transaction, else of the connector's."""
        transaction = None
        connector = int(payload["connector_id"])
        if payload.get("transaction_id") is not None:
            transaction = self._learn(str(payload["transaction_id"]), connector)
        elif connector > 0:
            transaction = self.on_connector(connector)
        return self._readings(payload["meter_value"], transaction)

    def start_transaction(self, payload: Mapping[str, Any]) -> tuple[int, list[Publish]]:
        """1.6 StartTransaction: the bridge's transaction id, and ``charging.started``."""
        ts = parse_time(payload["timestamp"])
        number = transaction_number(int(payload["connector_id"]), ts, payload["meter_start"])
        transaction = Transaction(
            str(number),
            int(payload["connector_id"]),
            started_ms=ts,
            meter_start_wh=float(payload["meter_start"]),
            id_tag=self.token_of(payload) or None,
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
            stop_token=self.token_of(payload) or None,
        )
        published.append(self.event("charging.stopped", data, ts=ts))
        return published
