"""Publishing device messages at QoS 1 and knowing the broker took them: the one mechanism
under every domain publisher (configuration, commands, authorization lists).

``ShortLivedPublisher`` opens a connection per batch, as the service account: an API process
needs no long-lived broker connection per gunicorn worker for an occasional change.
``WorkerPublisher`` publishes through a worker's long-lived ``ThreadedLink``. Both answer
False (logged) instead of raising when the broker cannot be reached: the caller has committed
its record first, and a worker re-sends what was not acknowledged.
"""

from __future__ import annotations

import logging

from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.errors import LinkError
from cloud.devicelink.threaded import Batch, ThreadedLink, publish_batch

log = logging.getLogger(__name__)

__all__ = ["Batch", "ShortLivedPublisher", "WorkerPublisher"]


class ShortLivedPublisher:
    """A connection per batch, as the service account."""

    def __init__(self, endpoint: Endpoint, timeout: float = 3.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def _publish(self, batch: Batch, what: str) -> bool:
        try:
            publish_batch(self.endpoint, batch, self.timeout)
        except LinkError as exc:
            log.warning("broker %s: %s not sent: %s", self.endpoint.where, what, exc)
            return False
        return True


class WorkerPublisher:
    """Publishes through a worker's long-lived connection."""

    def __init__(self, connection: ThreadedLink, timeout: float = 5.0) -> None:
        self.connection = connection
        self.timeout = timeout

    def _publish(self, batch: Batch, what: str) -> bool:
        if not self.connection.connected.is_set():
            return False
        try:
            self.connection.publish_all(batch, self.timeout)
        except LinkError as exc:
            log.warning("%s failed: %s", what, exc)
            return False
        return True
