"""A device's status message (contract 4.2) as the registry records it: I/O-free."""

from __future__ import annotations

import dataclasses
from typing import Any

from prometheus_client import Gauge

from cloud.devicelink.rejects import Rejected
from firmware.core import contract

DEVICES_ONLINE = Gauge("ampfleet_devices_online", "Devices whose last status is online.")
DEVICES_QUARANTINED = Gauge(
    "ampfleet_devices_quarantined",
    "Devices in quarantine (not approved, or a swapped board), waiting for an admin.",
)


@dataclasses.dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A device's connection state as it announced it (or its last will did)."""

    device_id: str
    online: bool
    ts_ms: int | None
    firmware_version: str | None
    schema: str | None = None  # the parameter schema the firmware runs: ``ac22-3p.3``
    # The hardware IDs found at boot (contract 4.2 ``hw``): {"chip": id, "slaves": {node: id}}
    hardware: dict[str, Any] | None = None


class StatusDecoder:
    """Decodes status messages under the contract's size and clock rules."""

    def __init__(self, max_bytes: int, max_skew_ms: int) -> None:
        self.max_bytes = max_bytes
        self.max_skew_ms = max_skew_ms

    def status(self, topic: str, payload: bytes, now_ms: int) -> StatusUpdate | Rejected:
        """A status update, or why not."""
        try:
            device_id, channel = contract.parse_topic(topic)
            if channel != contract.STATUS:
                raise contract.ContractError("bad_topic", None, f"not status: {channel}")
            s = contract.decode_status(payload, now_ms, self.max_bytes, self.max_skew_ms)
        except contract.ContractError as exc:
            return Rejected(exc.reason, exc.field, str(exc))
        return StatusUpdate(device_id, s.state == "online", s.ts, s.fw, s.schema, s.hw)
