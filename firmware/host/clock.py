"""Simulated time and randomness: no real sleeps, reproducible runs."""

from __future__ import annotations

from firmware.hal.interface import Clock

START_MS = 1_790_000_000_000  # 2026-09-21: any fixed epoch time keeps runs reproducible


class SimClock(Clock):
    """A clock that moves only when told to; one instance may drive a whole fleet."""

    __slots__ = ("_now", "is_synced")

    def __init__(self, start_ms: int = START_MS, synced: bool = True) -> None:
        self._now = start_ms
        self.is_synced = synced  # False: as before the first SNTP answer (contract 8)

    def now_ms(self) -> int:
        """The simulated time, ms since the epoch."""
        return self._now

    def synced(self) -> bool:
        """Whether the device clock counts as set."""
        return self.is_synced

    def advance(self, ms: int) -> int:
        """Move time forward by ``ms``; returns the new time."""
        if ms < 0:
            raise ValueError("time only moves forward")
        self._now += ms
        return self._now


class XorShift:
    """A tiny seeded random source (xorshift64*): ``rng()`` is a float in [0, 1).

    A ``random.Random`` carries 2.5 KB of Mersenne Twister state; a thousand simulated chargers
    each need only a few draws (back-off jitter, first sampling offset), so one integer does.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int = 1) -> None:
        self._state = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF or 1

    def __call__(self) -> float:
        x = self._state
        x ^= x >> 12
        x ^= (x << 25) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
        self._state = x
        return ((x * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF) / 18446744073709551616.0
