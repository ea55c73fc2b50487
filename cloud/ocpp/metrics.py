"""Prometheus metrics of the OCPP bridge (served on the worker's ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTED = Gauge("ampfleet_ocpp_chargers_connected", "OCPP chargers connected to this bridge.")
REFUSED = Counter(
    "ampfleet_ocpp_handshakes_refused_total", "OCPP handshakes refused, by HTTP status.", ["status"]
)
REQUESTS = Counter(
    "ampfleet_ocpp_requests_total", "Calls received from chargers, by action.", ["action"]
)
CALL_ERRORS = Counter(
    "ampfleet_ocpp_call_errors_sent_total", "CallErrors sent to chargers, by code.", ["code"]
)
COMMANDS = Counter(
    "ampfleet_ocpp_commands_total", "Contract commands handled, by result status.", ["status"]
)
VALUES_DROPPED = Counter(
    "ampfleet_ocpp_values_dropped_total",
    "Sampled values no parameter of the charger's family takes.",
)
