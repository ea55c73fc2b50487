"""The offline buffer: encoded telemetry and events kept while the link is down (contract 7).

Two bounded FIFO rings. Session events (``contract.MUST_DELIVER``: ``charging.started``,
``charging.meter_start``, ``charging.stopped``) have a ring of their own: a long outage fills
the main ring with telemetry, whose oldest samples go first, but it never pushes out the
record of a session, which is what billing is made of: session events have priority for the
space. The replay still sends everything in the order it was produced (each message carries its
place in that order), so the cloud sees each of the device's streams in ``seq`` order.

Each ring holds at most ``capacity`` messages and ``max_bytes`` of payload; when full, its
oldest message is dropped and counted — ``dropped`` for the main ring (reported after
reconnecting as a ``buffer.overflow`` event), ``session_dropped`` for the session ring
(reported as the ``charging.lost`` event, severity ``error``: a session the cloud will never
bill). Items keep their original payload (hence their ``ts`` and ``seq``); the link drains them
oldest first.

The rings' slots are allocated on the first ``put`` and released once drained, so a fleet of
simulated devices that never go offline pays nothing for them.
"""

SESSION_CAPACITY = 64  # 32 sessions' start and stop events
SESSION_MAX_BYTES = 16384


class Ring:
    """A drop-oldest FIFO of (channel, payload, order) triples."""

    __slots__ = ("_head", "_items", "capacity", "count", "dropped", "max_bytes", "size")

    def __init__(self, capacity: int = 256, max_bytes: int = 65536) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items = None  # type: list[tuple[str, bytes, int] | None] | None
        self._head = 0
        self.count = 0
        self.size = 0  # payload bytes held
        self.dropped = 0  # messages dropped since the counter was last taken

    def __len__(self) -> int:
        return self.count

    def put(self, channel: str, payload: bytes, order: int = 0) -> None:
        """Append a message, dropping the oldest ones to make room."""
        if len(payload) > self.max_bytes:
            self.dropped += 1  # could never fit: dropping it is the only honest option
            return
        while self.count and (
            self.count == self.capacity or self.size + len(payload) > self.max_bytes
        ):
            self._drop_oldest()
        if self._items is None:  # after the drops: dropping the last one releases the ring
            self._items = [None] * self.capacity
        self._items[(self._head + self.count) % self.capacity] = (channel, payload, order)
        self.count += 1
        self.size += len(payload)

    def peek(self) -> "tuple[str, bytes, int] | None":
        """The oldest message, left in place (None when empty)."""
        if not self.count:
            return None
        return self._items[self._head]  # type: ignore[index]

    def pop(self) -> "tuple[str, bytes, int] | None":
        """Remove and return the oldest message (None when empty)."""
        item = self.peek()
        if item is None:
            return None
        self._items[self._head] = None  # type: ignore[index]
        self._head = (self._head + 1) % self.capacity
        self.count -= 1
        self.size -= len(item[1])
        if not self.count:
            self._items = None
            self._head = 0
        return item

    def _drop_oldest(self) -> None:
        self.pop()
        self.dropped += 1


class Outbox:
    """The main ring (telemetry and ordinary events) and the session ring, drained together in
    the order the messages were put."""

    __slots__ = ("main", "order", "sessions")

    def __init__(
        self,
        capacity: int = 256,
        max_bytes: int = 65536,
        session_capacity: int = SESSION_CAPACITY,
        session_max_bytes: int = SESSION_MAX_BYTES,
    ) -> None:
        self.main = Ring(capacity, max_bytes)
        self.sessions = Ring(session_capacity, session_max_bytes)
        self.order = 0  # the next message's place; back to 0 whenever both rings are empty

    def __len__(self) -> int:
        return self.main.count + self.sessions.count

    @property
    def size(self) -> int:
        """Payload bytes held in both rings."""
        return self.main.size + self.sessions.size

    @property
    def dropped(self) -> int:
        """Messages of the main ring dropped since take_dropped() was last called."""
        return self.main.dropped

    @property
    def session_dropped(self) -> int:
        """Session events dropped since take_session_dropped() was last called."""
        return self.sessions.dropped

    def put(self, channel: str, payload: bytes, must_deliver: bool = False) -> None:
        """Append a message to its ring (``must_deliver``: the session ring)."""
        (self.sessions if must_deliver else self.main).put(channel, payload, self.order)
        self.order += 1

    def _next(self) -> "Ring | None":
        """The ring holding the oldest message of both (None when both are empty)."""
        first = self.main.peek()
        session = self.sessions.peek()
        if session is not None and (first is None or session[2] < first[2]):
            return self.sessions
        return self.main if first is not None else None

    def peek(self) -> "tuple[str, bytes] | None":
        """The oldest message, left in place (None when empty)."""
        ring = self._next()
        if ring is None:
            return None
        item = ring.peek()
        return item[0], item[1]  # type: ignore[index]

    def pop(self) -> "tuple[str, bytes] | None":
        """Remove and return the oldest message (None when empty)."""
        ring = self._next()
        if ring is None:
            return None
        item = ring.pop()
        if not len(self):
            self.order = 0  # keeps the counter a small int on a device that runs for years
        return item[0], item[1]  # type: ignore[index]

    def take_dropped(self) -> int:
        """The number of main-ring messages dropped since the last call, and reset it."""
        dropped = self.main.dropped
        self.main.dropped = 0
        return dropped

    def take_session_dropped(self) -> int:
        """The number of session events dropped since the last call, and reset it."""
        dropped = self.sessions.dropped
        self.sessions.dropped = 0
        return dropped
