"""Telemetry: the store that keeps chargers' samples (SQLite embedded, InfluxDB in production).

``open_store(settings)`` gives the configured :class:`TelemetryStore`; see ``store.py`` for the
interface, the data model and the exception tree.
"""

from cloud.telemetry.store import (
    InvalidSampleError,
    Point,
    Sample,
    StoreRejectedError,
    StoreUnavailableError,
    TelemetryError,
    TelemetryStore,
    check_sample,
    open_store,
)

__all__ = [
    "InvalidSampleError",
    "Point",
    "Sample",
    "StoreRejectedError",
    "StoreUnavailableError",
    "TelemetryError",
    "TelemetryStore",
    "check_sample",
    "open_store",
]
