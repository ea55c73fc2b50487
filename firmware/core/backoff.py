"""Reconnect back-off: exponential with full jitter (device contract 6).

``attempt n = 0, 1, 2, ...: wait uniform(0, min(cap, base * 2**n))``; ``n`` returns to 0 once a
connection has stayed up for ``stable_ms``. The first attempt after power-on waits
``uniform(0, power_on_ms)`` (a whole site comes back from an outage at once), and refused
credentials wait ``refused_ms`` plus jitter: retrying faster cannot fix them.

I/O-free: ``rand`` is injected (a callable returning a float in [0, 1): ``random.random`` on
the board, a seeded ``random.Random(seed).random`` in simulations and tests).
"""

BASE_MS = 1000
CAP_MS = 300000
STABLE_MS = 60000
POWER_ON_MS = 10000
REFUSED_MS = 300000


class Backoff:
    """Delays between connection attempts; holds only the attempt count and when we came up."""

    __slots__ = (
        "attempt",
        "base_ms",
        "cap_ms",
        "power_on_ms",
        "rand",
        "refused_ms",
        "stable_ms",
        "up_since",
    )

    def __init__(
        self,
        rand: "object",
        base_ms: int = BASE_MS,
        cap_ms: int = CAP_MS,
        stable_ms: int = STABLE_MS,
        power_on_ms: int = POWER_ON_MS,
        refused_ms: int = REFUSED_MS,
    ) -> None:
        self.rand = rand
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.stable_ms = stable_ms
        self.power_on_ms = power_on_ms
        self.refused_ms = refused_ms
        self.attempt = 0
        self.up_since = None  # type: int | None

    def _uniform(self, high: int) -> int:
        return int(self.rand() * high)  # type: ignore[operator]

    def first_delay(self) -> int:
        """The wait before the first attempt after power-on."""
        return self._uniform(self.power_on_ms)

    def next_delay(self, refused: bool = False) -> int:
        """The wait before the next attempt, after a failed one or a lost connection."""
        self.up_since = None
        if refused:  # CONNACK 4/5: bad credentials
            return self.refused_ms + self._uniform(self.base_ms * 10)
        ceiling = self.cap_ms
        if self.attempt < 30:  # 2**30 s is past any cap: stop growing the integer
            ceiling = min(self.cap_ms, self.base_ms * (1 << self.attempt))
        self.attempt += 1
        return self._uniform(ceiling)

    def connected(self, now_ms: int) -> None:
        """A connection came up at ``now_ms``."""
        self.up_since = now_ms

    def tick(self, now_ms: int) -> None:
        """Forget past failures once the connection has been stable for ``stable_ms``."""
        if self.up_since is not None and now_ms - self.up_since >= self.stable_ms:
            self.attempt = 0
