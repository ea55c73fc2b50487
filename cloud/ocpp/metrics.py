"""Prometheus metrics of the OCPP bridge (served on the worker's ``/metrics``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily

CONNECTED = Gauge("ampfleet_ocpp_chargers_connected", "OCPP chargers connected to this bridge.")
REFUSED = Counter(
    "ampfleet_ocpp_handshakes_refused_total", "OCPP handshakes refused, by HTTP status.", ["status"]
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

BROKER_PACKETS = Counter(
    "ampfleet_ocpp_broker_packets_total", "MQTT packets the bridge wrote to the broker."
)
BROKER_WRITES = Counter(
    "ampfleet_ocpp_broker_writes_total",
    "Writes to the broker's socket (packets are coalesced: one write per loop turn).",
)

MAX_ACTIONS = 100  # a charger may send any action name: the rest are counted as "other"


class _RequestCounter:
    """``ampfleet_ocpp_requests_total{action}``, counted in a plain dict on the bridge's loop
    and read at scrape time: a prometheus ``Counter`` takes a lock on every increment, and
    this one counts every message (measured: 2 % of a MeterValues)."""

    name = "ampfleet_ocpp_requests_total"
    documentation = "Calls received from chargers, by action."

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, action: object) -> None:
        """One more call of ``action``."""
        name = str(action)[:40]
        counts = self.counts
        if name in counts:
            counts[name] += 1
        elif len(counts) < MAX_ACTIONS:
            counts[name] = 1
        else:
            counts["other"] = counts.get("other", 0) + 1

    def describe(self) -> Iterator[CounterMetricFamily]:
        """The family, without samples (for the registry's duplicate check)."""
        yield CounterMetricFamily(self.name, self.documentation, labels=["action"])

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The counts so far (a copy: the loop may add an action meanwhile)."""
        family = CounterMetricFamily(self.name, self.documentation, labels=["action"])
        for action, value in sorted(dict(self.counts).items()):
            family.add_metric([action], value)
        yield family


REQUESTS = _RequestCounter()
REGISTRY.register(REQUESTS)


def request(action: object) -> None:
    """Count a call received from a charger."""
    REQUESTS.count(action)
