"""Prometheus metrics of the ingest worker (the shared message counters are re-exported)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from cloud.devicelink.metrics import FLAGGED, RECEIVED, REJECTED

UNCHECKED = Counter(
    "ampfleet_samples_unchecked_total",
    "Samples stored without a schema check: unknown device or family, or the registry down.",
    ["reason"],
)
WRITTEN = Counter("ampfleet_samples_written_total", "Samples written to the telemetry store.")
SPOOLED = Counter(
    "ampfleet_samples_spooled_total", "Samples kept in the durable spool while the store was down."
)
STORE_ERRORS = Counter("ampfleet_store_errors_total", "Failed telemetry store writes.", ["kind"])
BATCH_SECONDS = Histogram(
    "ampfleet_batch_write_seconds",
    "Time to write one batch.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("ampfleet_ingest_queue_depth", "Samples waiting in the ingest queue.")
SPOOL_DEPTH = Gauge("ampfleet_ingest_spool_batches", "Batches waiting in the durable spool.")

__all__ = [
    "BATCH_SECONDS",
    "FLAGGED",
    "QUEUE_DEPTH",
    "RECEIVED",
    "REJECTED",
    "SPOOLED",
    "SPOOL_DEPTH",
    "STORE_ERRORS",
    "UNCHECKED",
    "WRITTEN",
]
