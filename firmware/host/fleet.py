"""A fleet of simulated chargers on one asyncio loop: the real firmware against a real broker.

Every charger is a ``SimCharger`` (the real master and slave applications on simulated
hardware) whose MQTT transport is a ``GmqttTransport``. They share one ``SimClock`` that follows
the wall clock, so their telemetry carries real timestamps. The loop wakes every ``tick_ms``,
moves the clock to now and steps each charger that is due (its own wake-up time) or that has
something from the broker; nothing else runs per charger, which is what lets one process hold
10,000 of them.

Drivers of the simulated plant: each charger alternates idle periods (exponentially
distributed, mean ``idle_mean_s``, 3 h by default: a public AC charger is busy a few hours a
day) with charging sessions: an EV plugs in wanting 5-40 kWh, charges, and leaves a few minutes
after it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from firmware.host.charger import SimCharger
from firmware.host.clock import SimClock, XorShift
from firmware.host.gmqtt_transport import GmqttTransport
from firmware.host.storage import MemoryStorage

if TYPE_CHECKING:
    from firmware.host.boards import BoardIdentity

Context = ssl.SSLContext | Callable[[], ssl.SSLContext]


@dataclasses.dataclass
class FleetStats:
    """What the fleet did so far."""

    devices: int = 0
    started: int = 0  # chargers whose firmware runs (the rest wait for their turn to boot)
    connected: int = 0
    telemetry: int = 0  # telemetry messages published
    sessions: int = 0  # EVs plugged in
    steps: int = 0


class _Driver:
    """When the EV of one charger arrives and leaves (a tiny per-charger state)."""

    __slots__ = ("in_session", "next_ms", "rand")

    def __init__(self, seed: int, now_ms: int, idle_mean_s: float) -> None:
        self.rand = XorShift(seed)
        self.in_session = False
        self.next_ms = now_ms + self.idle(idle_mean_s)

    def idle(self, mean_s: float) -> int:
        """A random idle time (exponential, mean ``mean_s``), in ms."""
        return int(-math.log(1.0 - self.rand()) * mean_s * 1000)


class Fleet:
    """``devices`` (id, password) as simulated chargers of ``family`` on ``host:port``.

    ``storages`` (one per device) are their flashes, ``contexts`` (one per device) their TLS
    client contexts instead of the shared ``context``: what ``from_boards`` gives for chargers
    that connect with client certificates."""

    def __init__(
        self,
        devices: Sequence[tuple[str, str | None]],
        host: str,
        port: int,
        *,
        family: str = "ac22-3p",
        context: ssl.SSLContext | None = None,
        contexts: Sequence[Context] | None = None,
        storages: Sequence[MemoryStorage] | None = None,
        charger_options: dict[str, Any] | None = None,
        seed: int = 1,
        boot_rate: float = 500.0,
        tick_ms: int = 250,
        busy_step_ms: int = 1000,
        idle_step_ms: int = 5000,
        idle_mean_s: float = 3 * 3600.0,
    ) -> None:
        self.clock = SimClock(start_ms=_now_ms())
        self.boot_rate = boot_rate
        self.tick_ms = tick_ms
        # The firmware's control cycle is 500 ms. Here a charger with an EV is stepped every
        # second (the relay opens the contactor after 3 s without a command from the master),
        # an idle one every 5 s, which only delays noticing a plug-in: that is what lets one
        # process hold 10,000. A message from the broker is handled at the next tick anyway.
        self.busy_step_ms = busy_step_ms
        self.idle_step_ms = idle_step_ms
        self.idle_mean_s = idle_mean_s
        if contexts is not None and len(contexts) != len(devices):
            raise ValueError("one TLS context per device")
        if storages is not None and len(storages) != len(devices):
            raise ValueError("one storage per device")
        self.transports = [
            GmqttTransport(
                host, port, device_id, password, contexts[n] if contexts is not None else context
            )
            for n, (device_id, password) in enumerate(devices)
        ]
        self._storages = storages
        self._charger_options = charger_options or {}
        self.chargers: list[SimCharger] = []
        self._devices = list(devices)
        self._family = family
        self._seed = seed
        self._wake: list[int] = []
        self._drivers: list[_Driver] = []
        self.stats = FleetStats(devices=len(devices))

    @classmethod
    def from_boards(
        cls,
        boards: Sequence[BoardIdentity],
        host: str,
        port: int,
        *,
        server_ca_file: str | None = None,
        **options: Any,
    ) -> Fleet:
        """Enrolled simulated boards (``firmware.host.boards.load_boards``) as chargers that
        connect over mutual TLS with the key and certificate each board holds; the server is
        checked against ``server_ca_file`` (default: the CA chain in the board's NVS)."""
        from firmware.host.boards import NVS_CA, ClientTls

        storages = [board.storage() for board in boards]
        contexts: list[Context] = [
            ClientTls(storage, server_ca_file, board.records.get(NVS_CA))
            for board, storage in zip(boards, storages, strict=True)
        ]
        devices = [(board.device_id, None) for board in boards]
        return cls(devices, host, port, contexts=contexts, storages=storages, **options)

    async def run(
        self, stop: asyncio.Event, progress: Callable[[FleetStats], None] | None = None
    ) -> None:
        """Boot the chargers (``boot_rate`` per second, as a real fleet powers up over time,
        never all at once) and run them until ``stop`` is set; then disconnect them all."""
        began = time.monotonic()
        try:
            while not stop.is_set():
                now = self._advance()
                self._boot(int((time.monotonic() - began) * self.boot_rate) + 1, now)
                self._step_due(now)
                if progress is not None:
                    progress(self._count())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.tick_ms / 1000)
        finally:
            for transport in self.transports[: len(self.chargers)]:
                transport.disconnect()
            await asyncio.sleep(0.2)  # let the DISCONNECTs go out

    def _advance(self) -> int:
        now = _now_ms()
        behind = now - self.clock.now_ms()
        if behind > 0:
            self.clock.advance(behind)
        return self.clock.now_ms()

    def _boot(self, target: int, now: int) -> None:
        while len(self.chargers) < min(target, len(self._devices)):
            index = len(self.chargers)
            device_id, _ = self._devices[index]
            charger = SimCharger(
                device_id,
                self.clock,
                self._family,
                transport=self.transports[index],
                seed=self._seed + index,
                storage=self._storages[index] if self._storages is not None else None,
                **self._charger_options,
            )
            self.chargers.append(charger)
            self._wake.append(now)
            self._drivers.append(_Driver(self._seed * 7919 + index, now, self.idle_mean_s))

    def _step_due(self, now: int) -> None:
        wake = self._wake
        steps = 0
        for index, charger in enumerate(self.chargers):
            self._drive(index, charger, now)
            if wake[index] <= now or self.transports[index].has_events():
                floor = self.busy_step_ms if charger.ev.plugged else self.idle_step_ms
                wake[index] = max(charger.step(), now + floor)
                steps += 1
        self.stats.steps += steps

    def _drive(self, index: int, charger: SimCharger, now: int) -> None:
        driver = self._drivers[index]
        if now < driver.next_ms:
            return
        ev = charger.ev
        if ev.plugged:  # the EV leaves by itself a while after it is full
            driver.next_ms = now + 60_000
        elif driver.in_session:
            driver.in_session = False
            driver.next_ms = now + driver.idle(self.idle_mean_s)
        else:
            target_wh = 5_000 + driver.rand() * 35_000
            stay_ms = 120_000 + int(driver.rand() * 600_000)
            ev.plug_in(target_wh=target_wh, unplug_after_ms=stay_ms)
            driver.in_session = True
            driver.next_ms = now + 60_000
            self.stats.sessions += 1
            self._wake[index] = now

    def _count(self) -> FleetStats:
        stats = self.stats
        stats.started = len(self.chargers)
        stats.connected = sum(1 for t in self.transports if t.is_connected)
        stats.telemetry = sum(t.telemetry for t in self.transports)
        return stats


def _now_ms() -> int:
    return int(time.time() * 1000)
