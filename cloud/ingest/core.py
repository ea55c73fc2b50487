"""The I/O-free core of ingest: topic + payload in, a sample or a counted rejection out."""

from __future__ import annotations

from cloud.devicelink.rejects import Rejected
from cloud.telemetry.store import RESERVED_NAMES, Sample
from firmware.core import contract


class Decoder:
    """Decodes telemetry messages under the contract's size and clock rules."""

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
