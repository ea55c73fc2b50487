"""The offline buffer: encoded telemetry and events kept while the link is down (contract 7).

A bounded FIFO ring: at most ``capacity`` messages and ``max_bytes`` of payload; when full, the
oldest message is dropped and counted (``dropped``), which the device reports after
reconnecting as a ``buffer.overflow`` event. Items keep their original payload (hence their
``ts`` and ``seq``); the link drains them oldest first.

The ring's slots are allocated on the first ``put`` and released once drained, so a fleet of
simulated devices that never go offline pays nothing for it.
"""


class Outbox:
    """A drop-oldest FIFO of (channel, payload) pairs."""

    __slots__ = ("_head", "_items", "capacity", "count", "dropped", "max_bytes", "size")

    def __init__(self, capacity: int = 256, max_bytes: int = 65536) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items = None  # type: list[tuple[str, bytes] | None] | None
        self._head = 0
        self.count = 0
        self.size = 0  # payload bytes held
        self.dropped = 0  # messages dropped since take_dropped() was last called

    def __len__(self) -> int:
        return self.count

    def put(self, channel: str, payload: bytes) -> None:
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
        self._items[(self._head + self.count) % self.capacity] = (channel, payload)
        self.count += 1
        self.size += len(payload)

    def peek(self) -> "tuple[str, bytes] | None":
        """The oldest message, left in place (None when empty)."""
        if not self.count:
            return None
        return self._items[self._head]  # type: ignore[index]

    def pop(self) -> "tuple[str, bytes] | None":
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

    def take_dropped(self) -> int:
        """The number of messages dropped since the last call, and reset it."""
        dropped = self.dropped
        self.dropped = 0
        return dropped

    def _drop_oldest(self) -> None:
        self.pop()
        self.dropped += 1
