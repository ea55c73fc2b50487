"""A whole simulated charger: the real master and slave applications on simulated hardware.

``SimCharger`` wires firmware/master/main.py ``Master`` and two firmware/slave/main.py ``Slave``
instances (meter and relay) to a simulated bus, pilot, plant, EV, flash and network, all on a
``SimClock``. It owns no thread and no socket: ``step()`` runs one master pass at the clock's
time, so one process can step thousands of them.

    clock = SimClock()
    broker = MemoryBroker()
    charger = SimCharger("CHG-0001", clock, broker=broker, seed=1)
    charger.run_for(30_000)                 # (a charger that owns its clock)
    charger.ev.plug_in(target_wh=5000)
    charger.run_for(600_000)
    charger.present_card("04A1B2C3")        # the card reader (checked against the local list)
    charger.start_with_guest_credential(c)  # a guest's signed pass (keys: NVS guest_keys)
    charger.power_cycle()                   # power cut: no goodbye, RAM lost, flash kept

A fleet shares one clock and steps every charger after each ``clock.advance``; a real broker
is reached by passing ``transport=`` an adapter with the MqttTransport methods.
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from pathlib import Path
from typing import Any

from firmware.core import charging, params
from firmware.hal.interface import Board, CardReader, ControlPilot, MqttTransport
from firmware.host.bus import SimBus
from firmware.host.clock import SimClock, XorShift
from firmware.host.network import MemoryBroker, MemoryTransport
from firmware.host.plant import MeterSensors, Plant, RelaySensors, SimEV
from firmware.host.storage import MemoryDownloader, MemoryStorage, Slot
from firmware.master.main import Master
from firmware.slave.main import Slave

BUILD_DIR = Path(__file__).resolve().parents[2] / "parameters" / "build"


@functools.lru_cache(maxsize=16)
def load_family(family_id: str) -> params.Family:
    """The compiled family ``parameters/build/<family_id>.json``, loaded once per process and
    shared by every simulated charger (it is immutable)."""
    if "/" in family_id or family_id.startswith("."):
        raise ValueError("a family id, not a path: " + family_id)
    return params.load_file(str(BUILD_DIR / (family_id + ".json")))


class HostBoard(Board):
    """The HAL of a simulated master (firmware/hal/interface.py ``Board``)."""

    __slots__ = (
        "chip",
        "clock",
        "cp",
        "downloader",
        "i2c",
        "keys",
        "mqtt",
        "rand",
        "reset_requested",
        "rfid",
        "signal_dbm",
        "storage",
    )

    def __init__(
        self,
        i2c: SimBus,
        cp: ControlPilot,
        clock: SimClock,
        storage: MemoryStorage,
        mqtt: MqttTransport,
        downloader: MemoryDownloader,
        rand: XorShift,
        signal_dbm: int | None = -61,
        rfid: CardReader | None = None,
        chip: str | None = None,
        keys: bool = True,
    ) -> None:
        self.chip = chip
        self.keys = keys
        self.i2c = i2c
        self.cp = cp
        self.clock = clock
        self.storage = storage
        self.mqtt = mqtt
        self.downloader = downloader
        self.rand = rand
        self.signal_dbm = signal_dbm
        self.rfid = rfid
        self.reset_requested = False

    def rssi(self) -> int | None:
        """The simulated Wi-Fi signal."""
        return self.signal_dbm

    def reset(self) -> None:
        """Ask the simulator to reboot this master after the current step."""
        self.reset_requested = True

    def chip_id(self) -> str | None:
        """The simulated master's unique id (hex)."""
        return self.chip

    def make_key(self, device_id: str) -> tuple[bytes, str] | None:
        """A fresh P-256 key and its CSR, made for real (``cryptography``), as a board with an
        EC library would; None when the simulated board is one that cannot (``keys=False``)."""
        if not self.keys:
            return None
        from firmware.tools.station import make_key_and_csr

        return make_key_and_csr(device_id)


def unique_id(device_id: str, node: str) -> bytes:
    """A simulated MCU's 6-byte unique id, stable for a device id and node: shaped like the
    ESP32-C3's factory MAC (Espressif's OUI 58:CF:79, then three bytes of a hash)."""
    digest = hashlib.sha256(f"{device_id}/{node}".encode()).digest()
    return bytes((0x58, 0xCF, 0x79)) + digest[:3]


def hardware_ids(device_id: str, family: params.Family) -> dict[str, Any]:
    """The hardware IDs a simulated charger announces by default (contract 4.2 ``hw``)."""
    return {
        "chip": unique_id(device_id, "master").hex(),
        "slaves": {node: unique_id(device_id, node).hex() for node, _, _ in family.slaves()},
    }


class PilotGenerator(ControlPilot):
    """The master's CP PWM output, wired to the plant's pilot line."""

    __slots__ = ("plant",)

    def __init__(self, plant: Plant) -> None:
        self.plant = plant

    def set_duty(self, percent: float) -> None:
        """Drive the pilot."""
        self.plant.set_duty(percent)


class SimCardReader(CardReader):
    """The card reader: cards presented (``present``) wait until the master polls it."""

    __slots__ = ("cards",)

    def __init__(self) -> None:
        self.cards: deque[str] | None = None  # created on the first card: most never see one

    def present(self, uid: str) -> None:
        """Hold a card to the reader."""
        if self.cards is None:
            self.cards = deque()
        self.cards.append(uid)

    def read(self) -> str | None:
        """The oldest card not yet read."""
        if not self.cards:
            return None
        return self.cards.popleft()


class OfflineTransport(MqttTransport):
    """The network stack of a broken image: every connection attempt fails."""

    __slots__ = ("listener",)

    def __init__(self) -> None:
        self.listener: Any = None

    def connect(self, client_id: str, will_topic: str, will_payload: bytes) -> None:
        """Fails."""
        self.listener.on_connect_failed(False)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Fails."""
        raise OSError("no network")

    def subscribe(self, topic: str, qos: int) -> None:
        """Fails."""
        raise OSError("no network")

    def disconnect(self) -> None:
        """Nothing to close."""


class SimCharger:
    """One simulated charger of family ``family`` (default ac22-3p: master, meter, relay)."""

    __slots__ = (
        "board",
        "bus",
        "clock",
        "device_id",
        "family",
        "hardware",
        "master",
        "master_options",
        "plant",
        "reader",
        "reboots",
        "slaves",
        "storage",
        "transport",
    )

    def __init__(
        self,
        device_id: str,
        clock: SimClock,
        family: str | params.Family = "ac22-3p",
        broker: MemoryBroker | None = None,
        transport: MqttTransport | None = None,
        fw: str = "1.0.0",
        seed: int = 0,
        downloader: MemoryDownloader | None = None,
        storage: MemoryStorage | None = None,
        hardware: dict[str, Any] | None = None,
        make_keys: bool = True,
        **master_options: Any,
    ) -> None:
        """``transport`` (or a ``broker`` to make a MemoryTransport to) reaches the cloud;
        ``hardware`` the MCUs' unique ids (``{"chip": hex, "slaves": {node: hex}}``, default
        ``hardware_ids(device_id, family)``: what an enrollment records, and what the master
        announces at boot); ``make_keys``: whether the board makes a new key to renew its
        certificate (else it asks to re-certify the key it holds, as a stock MicroPython board
        does); ``master_options`` go to ``Master`` (retry, outbox, ...)."""
        if transport is None:
            if broker is None:
                raise ValueError("give a broker or a transport")
            transport = MemoryTransport(broker)
        self.device_id = device_id
        self.clock = clock
        self.family = load_family(family) if isinstance(family, str) else family
        self.plant = Plant(clock)
        self.bus = SimBus(clock)
        self.slaves: dict[str, Slave] = {}
        self.hardware = hardware or hardware_ids(device_id, self.family)
        for node, _, role in self.family.slaves():
            sensors: Any = None
            if role == "meter":
                sensors = MeterSensors(self.plant)
            elif role == "relay":
                sensors = RelaySensors(self.plant, self.family)
            uid = self.hardware["slaves"].get(node)
            slave = Slave(self.family, node, sensors, unique_id=bytes.fromhex(uid) if uid else None)
            self.slaves[node] = slave
            self.bus.attach(slave)
        self.storage = storage or MemoryStorage(fw)
        self.transport = transport
        self.reader = SimCardReader()
        self.board = HostBoard(
            self.bus,
            PilotGenerator(self.plant),
            clock,
            self.storage,
            transport,
            downloader or MemoryDownloader(),
            XorShift(seed + 1),
            rfid=self.reader,
            chip=self.hardware["chip"],
            keys=make_keys,
        )
        self.master_options = master_options
        self.reboots = 0
        self.master = Master(
            self.board, self.family, device_id, fw, clock.now_ms(), **master_options
        )

    @property
    def ev(self) -> SimEV:
        """The EV at this charger (plug it in, unplug it)."""
        return self.plant.ev

    def present_card(self, uid: str) -> None:
        """Hold the card ``uid`` to the reader; the master reads it at its next control cycle."""
        self.reader.present(uid)

    def start_with_guest_credential(self, credential: str) -> str | None:
        """Show a guest credential to the charger (the app's local channel): checked offline
        with the platform keys in this charger's NVS (``guest_keys``); None when accepted (the
        session starts at the next control cycle with an EV plugged in), else the reason."""
        return self.master.present_guest_credential(credential, self.clock.now_ms())

    def power_cycle(self) -> None:
        """Cut the power and restore it: no goodbye (a MemoryTransport's broker publishes the
        will), the contactor drops, RAM is lost; flash, the meter's register and the EV stay.
        The master boots at once; step the clock first for an outage that lasts."""
        now = self.clock.now_ms()
        transport = self.board.mqtt
        if isinstance(transport, MemoryTransport) and transport.is_connected:
            transport.broker.drop(self.device_id)
        self.plant.command_contactor(False, now)
        self._reset(now)

    def address(self, node: str) -> int:
        """The I2C address of a slave node (for fault injection on ``bus``)."""
        return self.slaves[node].address

    def step(self) -> int:
        """One master pass at the clock's time; returns when the next one is due."""
        now = self.clock.now_ms()
        self.plant.advance(now)
        wake = self.master.step(now)
        if self.board.reset_requested:
            self._reset(now)
            wake = now
        return wake

    def run_for(self, duration_ms: int, step_ms: int = 500) -> None:
        """Advance the clock by ``duration_ms`` in steps of ``step_ms``, stepping after each.
        Only for a charger that owns its clock; a fleet advances the shared clock itself."""
        end = self.clock.now_ms() + duration_ms
        while self.clock.now_ms() < end:
            self.clock.advance(min(step_ms, end - self.clock.now_ms()))
            self.step()

    def _reset(self, now: int) -> None:
        """A reboot: RAM is lost, flash and the slaves stay; the bootloader picks the image."""
        self.board.reset_requested = False
        self.reboots += 1
        self.plant.set_duty(charging.DUTY_OFF)  # the CP generator idles while the MCU restarts
        slot: Slot = self.storage.reset()
        for _ in range(2):  # a crashing image resets again at once; the bootloader rolls back
            if slot.behaviour != "crash":
                break
            slot = self.storage.reset()
        self.board.mqtt = self.transport if slot.behaviour == "ok" else OfflineTransport()
        self.master = Master(
            self.board, self.family, self.device_id, slot.version, now, **self.master_options
        )
