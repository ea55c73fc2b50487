"""The hardware interface: everything the master and slave applications touch, and nothing more.

Two implementations: ``firmware/hal/esp32.py`` (MicroPython on the ESP32-C3: machine.I2C,
PWM, ADC, Pin, network.WLAN, umqtt, esp32.Partition/NVS) and ``firmware/host`` (CPython:
simulated bus, slaves, EV, card reader, clock, storage and an in-memory broker). The
applications receive a ``Board`` and never import ``machine`` themselves, which is what lets
thousands of simulated chargers run in one process.

These classes document the contract and fail loudly when a method is missing; implementations
subclass them (MicroPython-compatible: no abc, no typing at run time).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class I2CBus:
    """The master's I2C bus: raw transactions with one slave (framing is i2cproto's job)."""

    def write(self, address: int, data: "Any") -> None:
        """One write transaction; OSError when the address is not acknowledged or on timeout."""
        raise NotImplementedError

    def read(self, address: int, nbytes: int) -> bytes:
        """One read transaction of ``nbytes``; OSError as for ``write``."""
        raise NotImplementedError


class ControlPilot:
    """The CP signal generator: 1 kHz +-12 V PWM (IEC 61851-1 A.2)."""

    def set_duty(self, percent: float) -> None:
        """Duty cycle in percent: 100 = steady +12 V (nothing offered), 0 = steady -12 V (F)."""
        raise NotImplementedError


class Clock:
    """Wall-clock time in ms since the Unix epoch, and whether it was set (SNTP)."""

    def now_ms(self) -> int:
        """The current time."""
        raise NotImplementedError

    def synced(self) -> bool:
        """True once the clock has been set (device contract 8: no ts before that)."""
        raise NotImplementedError


class Storage:
    """Non-volatile storage: NVS key/value records and the A/B OTA partitions."""

    def get(self, key: str) -> "bytes | None":
        """An NVS record, None when absent."""
        raise NotImplementedError

    def put(self, key: str, value: bytes) -> None:
        """Write (and commit) an NVS record."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Erase an NVS record (absent is fine)."""
        raise NotImplementedError

    def ota_max_size(self) -> int:
        """Size of the inactive OTA partition: the largest image that fits."""
        raise NotImplementedError

    def ota_begin(self, size: int) -> None:
        """Start writing an image of ``size`` bytes into the inactive partition; OSError."""
        raise NotImplementedError

    def ota_write(self, data: "Any") -> None:
        """Append to the image being written; OSError when the flash refuses."""
        raise NotImplementedError

    def ota_switch(self) -> None:
        """Make the image just written boot next (esp32.Partition.set_boot); OSError."""
        raise NotImplementedError

    def ota_mark_valid(self) -> None:
        """The running image is good: cancel the bootloader's rollback."""
        raise NotImplementedError

    def ota_rollback(self) -> None:
        """Boot the previous image next (the caller then resets)."""
        raise NotImplementedError


class Downloader:
    """Fetches firmware images (HTTP(S) on the board)."""

    def open(self, url: str) -> "Any":
        """A stream with ``read(n) -> bytes`` (b"" at the end; OSError when the transfer
        breaks) and ``close()`` (never raises); OSError when it cannot be opened."""
        raise NotImplementedError


class MqttTransport:
    """The master's MQTT connection (see firmware/core/link.py for the calling rules).

    ``attach(listener)`` names the object whose ``on_connected()``,
    ``on_connect_failed(refused)``, ``on_disconnected()`` and ``on_message(topic, payload)``
    the transport calls; ``poll()`` lets a polled client (umqtt) deliver what arrived.
    """

    listener = None  # type: Any

    def attach(self, listener: "Any") -> None:
        """Set the object that receives connection events and messages."""
        self.listener = listener

    def connect(self, client_id: str, will_topic: str, will_payload: bytes) -> None:
        """Start connecting (clean session false, keepalive 60 s, will QoS 1 retained)."""
        raise NotImplementedError

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish; OSError when the connection is gone."""
        raise NotImplementedError

    def subscribe(self, topic: str, qos: int) -> None:
        """Subscribe to one exact topic."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Send DISCONNECT and close; never raises (a dead connection is closed already)."""
        raise NotImplementedError

    def poll(self) -> None:
        """Deliver pending incoming messages and connection events (no-op for push clients)."""


class CardReader:
    """The RFID/NFC reader at the front of the charger (ISO 14443 cards, OCPP idTokens).

    Polled by the master every control cycle; the reader keeps what was presented in between.
    """

    def read(self) -> "str | None":
        """The id of a card presented since the last call, None when there was none. The id is
        the card's UID in uppercase hex (``04A1B2C3``): the form of the cloud's local list."""
        raise NotImplementedError


class CredentialReader:
    """Where a guest's phone hands over a guest credential (a QR camera, NFC, a BLE write:
    docs/guest-credentials.md). Polled by the master every control cycle."""

    def read(self) -> "str | None":
        """The credential text handed over since the last call, None when there was none."""
        raise NotImplementedError


class Board:
    """Everything a master application gets from its hardware.

    Attributes: ``i2c`` (I2CBus), ``cp`` (ControlPilot), ``clock`` (Clock), ``storage``
    (Storage), ``mqtt`` (MqttTransport), ``downloader`` (Downloader), ``rand`` (a callable
    returning a float in [0, 1)), ``rfid`` (CardReader, None for a board without a reader),
    ``guest`` (CredentialReader, None for a board without one).
    """

    i2c = None  # type: Any
    cp = None  # type: Any
    clock = None  # type: Any
    storage = None  # type: Any
    mqtt = None  # type: Any
    downloader = None  # type: Any
    rand = None  # type: Any
    rfid = None  # type: Any
    guest = None  # type: Any

    def rssi(self) -> "int | None":
        """Wi-Fi signal strength in dBm, None when unknown."""
        return None

    def chip_id(self) -> "str | None":
        """The master MCU's unique id in lowercase hex (machine.unique_id(): on the ESP32-C3
        its factory MAC), None when unknown; announced with the slaves' (contract 4.2 hw)."""
        return None

    def make_key(self, device_id: str) -> "tuple[bytes, str] | None":
        """A new EC P-256 key pair for certificate renewal: (private key PEM, CSR PEM with CN
        ``device_id``); None when the board cannot make keys (stock MicroPython has no
        public-key crypto: it renews the key it holds, docs/device-contract.md 4.10)."""
        return None

    def reset(self) -> None:
        """Reboot the MCU (on the board this does not return)."""
        raise NotImplementedError
