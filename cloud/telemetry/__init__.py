"""Telemetry: the store that keeps chargers' samples (SQLite embedded, InfluxDB in production).

``open_store(settings)`` gives the configured :class:`TelemetryStore`; see ``store.py`` for the
interface and the data model.

Exceptions (defined in ``store.py``)::

    TelemetryError                    base of this package
    ├── StoreUnavailableError         store down, unreachable, overloaded, not authorised:
    │                                 keep the batch and retry later
    └── StoreRejectedError            the store refused the data itself: retrying won't help
        └── InvalidSampleError        refused before any I/O: no backend can store this sample
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
