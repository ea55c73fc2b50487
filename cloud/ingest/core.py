"""The I/O-free core of ingest: topic + payload in, a sample or a counted rejection out."""

from __future__ import annotations

import dataclasses

from cloud.telemetry.store import RESERVED_NAMES, Sample
from firmware.core import contract


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused: a reason code (a metric label) and the field, if one."""

    reason: str
    field: str | None
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A device's connection state as it announced it (or its last will did)."""

    device_id: str
    online: bool
    ts_ms: int | None
    firmware_version: str | None
    schema: str | None = None  # the parameter schema the firmware runs: ``ac22-3p.3``


class Decoder:
    """Decodes device messages under the contract's size and clock rules."""

    def __init__(self, max_bytes: int, max_skew_ms: int) -> None:
        self.max_bytes = max_bytes
        self.max_skew_ms = max_skew_ms

    def telemetry(self, topic: str, payload: bytes, now_ms: int) -> Sample | Rejected:
        """A telemetry sample, or why not."""
        try:
            device_id, channel = contract.parse_topic(topic)
            if channel != contract.TELEMETRY:
                raise contract.ContractError("bad_topic", None, f"not telemetry: {channel}")
            t = contract.decode_telemetry(payload, now_ms, self.max_bytes, self.max_skew_ms)
            # JSON does not tell 230 from 230.0, but the stores keep one type per parameter:
            # numbers are floats until the parameter schema says otherwise.
            values = {k: float(v) if type(v) is int else v for k, v in t.values.items()}
        except contract.ContractError as exc:
            return Rejected(exc.reason, exc.field, str(exc))
        # The contract's id rules already keep names storable on every backend (what the
        # stores' check_sample verifies at some cost per sample); only reserved names remain.
        reserved = RESERVED_NAMES.intersection(values)
        if reserved:
            return Rejected("unstorable", f"values.{min(reserved)}", "reserved parameter name")
        return Sample(device_id, t.node, t.ts, t.seq, values)

    def status(self, topic: str, payload: bytes, now_ms: int) -> StatusUpdate | Rejected:
        """A status update, or why not."""
        try:
            device_id, channel = contract.parse_topic(topic)
            if channel != contract.STATUS:
                raise contract.ContractError("bad_topic", None, f"not status: {channel}")
            s = contract.decode_status(payload, now_ms, self.max_bytes, self.max_skew_ms)
        except contract.ContractError as exc:
            return Rejected(exc.reason, exc.field, str(exc))
        return StatusUpdate(device_id, s.state == "online", s.ts, s.fw, s.schema)
