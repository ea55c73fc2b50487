"""Telemetry ingest: device messages from the broker into the telemetry store.

Nothing accepted is lost: a message is acknowledged to the broker (MQTT PUBACK) only once its
sample is in the telemetry store or in the worker's durable spool; a crash before that makes the
broker deliver it again, and the store keeps one copy per device/node/timestamp.

Exceptions::

    IngestError                base of this package (nothing raises it yet: the worker counts
                               and keeps a rejected message, and retries the store's
                               ``StoreUnavailableError``, see ``cloud.telemetry``)
"""


class IngestError(Exception):
    """Base of the ingest package's errors."""
