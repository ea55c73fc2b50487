"""Fixtures of the firmware tests: the compiled schema and simulated chargers (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.core import params
from firmware.host import MemoryBroker, SimCharger, SimClock, load_family

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "parameters" / "build"
DEVICE = "CHG-0001"


@pytest.fixture(scope="session")
def family() -> params.Family:
    """ac22-3p as the firmware loads it: master, meter (0x20), relay (0x21)."""
    return load_family("ac22-3p")


@pytest.fixture
def clock() -> SimClock:
    """A simulated clock at a fixed start."""
    return SimClock()


@pytest.fixture
def broker() -> MemoryBroker:
    """An in-memory MQTT broker."""
    return MemoryBroker()


@pytest.fixture
def charger(clock: SimClock, broker: MemoryBroker) -> SimCharger:
    """A simulated ac22-3p charger connected to ``broker``, run until it is online."""
    sim = SimCharger(DEVICE, clock, broker=broker, seed=7)
    sim.run_for(15_000)
    assert sim.master.link.up
    return sim
