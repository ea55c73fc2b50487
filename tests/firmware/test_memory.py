"""Memory per simulated master: the fleet simulator runs thousands in one process.

Measured with tracemalloc over a small fleet that has connected and charges, split by where
the allocations come from (docs/firmware.md gives the figure for 1,000). The budgets are loose
on purpose: they catch a per-device structure that grows by an order of magnitude (a
Mersenne Twister per device, a preallocated buffer, an unbounded log), not a few bytes.
"""

from __future__ import annotations

import collections
import gc
import tracemalloc

from firmware.host import MemoryBroker, SimCharger, SimClock, load_family

FLEET = 100
MASTER_BUDGET = 8 * 1024  # firmware/core + firmware/master, per device
CHARGER_BUDGET = 16 * 1024  # everything a simulated charger holds, broker session included


def measure(fleet_size: int, steps: int) -> dict[str, float]:
    """Bytes per charger by origin, after ``steps`` half-second steps of a charging fleet."""
    load_family("ac22-3p")  # shared by every charger: not a per-device cost
    clock = SimClock()
    broker = MemoryBroker(keep_log=False)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        fleet = [
            SimCharger(f"CHG-{n:05d}", clock, broker=broker, seed=n) for n in range(fleet_size)
        ]
        for n, charger in enumerate(fleet):
            if n % 2 == 0:
                charger.ev.plug_in(target_wh=20_000)
        for _ in range(steps):
            clock.advance(500)
            for charger in fleet:
                charger.step()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert all(charger.master.link.up for charger in fleet)
    sizes: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "filename"):
        name = stat.traceback[0].filename
        if "/firmware/core/" in name or "/firmware/master/" in name:
            sizes["master"] += stat.size_diff
        else:
            sizes["simulation"] += stat.size_diff
    return {key: value / fleet_size for key, value in sizes.items()}


def test_memory_per_simulated_master_stays_small() -> None:
    per_charger = measure(FLEET, 60)
    assert per_charger["master"] < MASTER_BUDGET, per_charger
    assert per_charger["master"] + per_charger["simulation"] < CHARGER_BUDGET, per_charger
