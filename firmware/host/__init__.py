"""The host implementation of the firmware's hardware (CPython only): simulated chargers.

Runs the real master and slave applications (firmware/master, firmware/slave) and the I/O-free
core on simulated hardware — I2C bus with fault injection, pilot, contactor, meter, EV, flash
with A/B partitions, an in-memory MQTT broker — under a simulated clock: no threads, no
sockets, no sleeps. See docs/firmware.md, "Host simulation".
"""

from firmware.host.bus import SimBus
from firmware.host.charger import (
    HostBoard,
    OfflineTransport,
    PilotGenerator,
    SimCardReader,
    SimCharger,
    load_family,
)
from firmware.host.clock import SimClock, XorShift
from firmware.host.network import MemoryBroker, MemoryTransport, Message, topic_matches
from firmware.host.plant import MeterSensors, Plant, RelaySensors, SimEV
from firmware.host.storage import MemoryDownloader, MemoryStorage, make_image

__all__ = [
    "HostBoard",
    "MemoryBroker",
    "MemoryDownloader",
    "MemoryStorage",
    "MemoryTransport",
    "Message",
    "MeterSensors",
    "OfflineTransport",
    "PilotGenerator",
    "Plant",
    "RelaySensors",
    "SimBus",
    "SimCardReader",
    "SimCharger",
    "SimClock",
    "SimEV",
    "XorShift",
    "load_family",
    "make_image",
    "topic_matches",
]
