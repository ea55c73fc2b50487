"""The hand-over between a link's thread and a worker's own: the link's thread must return at
once (its keepalives keep flowing while the worker waits on a slow database or signs), yet
nothing it hands over may be dropped.

A bounded queue: a full inbox blocks the link's thread, which is back-pressure on the broker
(unacknowledged QoS 1 messages stay there) rather than memory. ``close`` wakes the worker's
thread; a full inbox needs no wake-up, the thread sees the stop flag between messages.
"""

from __future__ import annotations

import contextlib
import queue
import threading

from cloud.devicelink.subscriptions import Message

POLL_S = 0.5  # how often a blocked hand-over looks at the stop flag


class Inbox:
    """Messages from the link's thread to the worker's, until ``stop`` is set."""

    def __init__(self, stop: threading.Event, maxsize: int = 1000) -> None:
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=maxsize)
        self._stop = stop

    def put(self, message: Message) -> None:
        """Hand a message over (the link's thread), waiting while the inbox is full; given up
        only when the worker stops (the broker then keeps the unacknowledged message)."""
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self) -> Message | None:
        """The next message (the worker's thread); None once closed."""
        return self._queue.get()

    def close(self) -> None:
        """Wake the worker's thread (call after setting ``stop``)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
