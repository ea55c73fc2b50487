"""Prometheus metrics every device-link worker shares: messages received, rejected, flagged."""

from __future__ import annotations

from prometheus_client import Counter

RECEIVED = Counter("ampfleet_messages_received_total", "Device messages received.", ["channel"])
REJECTED = Counter(
    "ampfleet_messages_rejected_total", "Device messages rejected.", ["channel", "reason"]
)
FLAGGED = Counter(
    "ampfleet_values_flagged_total",
    "Telemetry values the device's parameter schema refused (the rest of the sample is stored).",
    ["reason"],
)
