"""The HAL on the ESP32-C3 under MicroPython (>= 1.26 for machine.I2CTarget).

Runs only on the board (imports ``machine``, ``network``, ``esp32``); the tests compile it
with mpy-cross. The firmware bundle (firmware/tools/bundle.py) keeps the package layout on the
board, so this module is ``firmware.hal.esp32`` there too.

Configuration (``load_config``): identity and secrets from the NVS partition made at the
factory (firmware/tools/nvs.py: namespace ``ampfleet``, blobs ``device_id``, ``mqtt_pass``,
``broker_url``, ``ca_cert``, ``client_cert``, ``client_key``, ``wifi_ssid``, ``wifi_pass``),
the firmware version from the bundle's ``/manifest.json``, and the board's wiring from an
optional ``/config.json`` (``role``: master or slave, ``node``, ``family``, pin numbers).
"""

import json
import time

import esp32
import machine
import network

from firmware.core import charging, registers
from firmware.hal import interface

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONFIG_FILE = "/config.json"
MANIFEST_FILE = "/manifest.json"
SCHEMA_DIR = "/parameters/"
NVS_NAMESPACE = "ampfleet"
BLOCK = 4096  # flash erase block: the OTA partition is written a block at a time
KEEPALIVE_S = 60  # device contract 6
PING_MS = 30000
RESYNC_MS = 6 * 3600 * 1000  # device contract 8: SNTP at least every 6 hours
# Seconds from 1970 to 2000: ports whose epoch is 2000 need it added (contract times are Unix).
EPOCH_OFFSET_S = 0 if time.gmtime(0)[0] == 1970 else 946684800


def _read_json(path: str) -> dict:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def load_config() -> dict:
    """Wiring from /config.json, identity and broker from NVS, version from the manifest."""
    config = _read_json(CONFIG_FILE)
    nvs = Nvs()
    for key in ("device_id", "broker_url", "wifi_ssid"):
        value = nvs.get(key)
        if value is not None:
            config[key] = value.decode()
    config["fw"] = _read_json(MANIFEST_FILE).get("version", "0.0.0+dev")
    config["schema_file"] = SCHEMA_DIR + config.get("family", "ac22-3p") + ".json"
    return config


def parse_broker_url(url: str) -> tuple:
    """(host, port, tls) from ``mqtts://host[:port]`` or ``mqtt://host[:port]``."""
    tls = url.startswith("mqtts://")
    rest = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    return host, int(port) if port else (8883 if tls else 1883), tls


class Nvs:
    """esp32.NVS with the get-by-size dance done once."""

    def __init__(self, namespace: str = NVS_NAMESPACE) -> None:
        self.nvs = esp32.NVS(namespace)

    def get(self, key: str) -> "bytes | None":
        buffer = bytearray(4096)
        try:
            size = self.nvs.get_blob(key, buffer)
        except OSError:  # ENOENT
            return None
        return bytes(buffer[:size])

    def put(self, key: str, value: bytes) -> None:
        self.nvs.set_blob(key, value)
        self.nvs.commit()

    def delete(self, key: str) -> None:
        try:
            self.nvs.erase_key(key)
            self.nvs.commit()
        except OSError:
            return  # absent: nothing to erase


# --- master board -----------------------------------------------------------------------------


class Esp32I2C(interface.I2CBus):
    """machine.I2C as the master's bus (OSError ENODEV when a slave does not acknowledge)."""

    def __init__(self, config: dict) -> None:
        pins = config.get("i2c", {})
        self.i2c = machine.I2C(
            0,
            scl=machine.Pin(pins.get("scl", 5)),
            sda=machine.Pin(pins.get("sda", 4)),
            freq=pins.get("freq", 100000),
            timeout=pins.get("timeout_us", 50000),
        )

    def write(self, address: int, data: "Any") -> None:
        self.i2c.writeto(address, data)

    def read(self, address: int, nbytes: int) -> bytes:
        return self.i2c.readfrom(address, nbytes)


class Esp32Pilot(interface.ControlPilot):
    """1 kHz PWM into the +-12 V pilot driver: duty 100 % = steady +12 V, 0 % = -12 V."""

    def __init__(self, config: dict) -> None:
        self.pwm = machine.PWM(machine.Pin(config.get("cp_pin", 6)), freq=1000, duty_u16=65535)

    def set_duty(self, percent: float) -> None:
        self.pwm.duty_u16(int(max(0.0, min(100.0, percent)) * 65535 / 100))


class Esp32Clock(interface.Clock):
    """Unix time in ms, set by SNTP once the network is up."""

    def __init__(self) -> None:
        self.is_synced = False
        self.synced_at = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1000000 + EPOCH_OFFSET_S * 1000

    def synced(self) -> bool:
        return self.is_synced

    def sync(self) -> bool:
        """SNTP; True once the clock is set (device contract 8)."""
        try:
            import ntptime

            ntptime.settime()
        except (OSError, ImportError):
            return self.is_synced
        self.is_synced = True
        self.synced_at = time.ticks_ms()
        return True

    def resync_due(self) -> bool:
        """True when the last SNTP answer is older than six hours."""
        return time.ticks_diff(time.ticks_ms(), self.synced_at) >= RESYNC_MS


class Esp32Storage(interface.Storage):
    """NVS records and the A/B OTA partitions (esp32.Partition, ESP-IDF rollback enabled)."""

    def __init__(self) -> None:
        self.nvs = Nvs()
        self.partition = None  # type: Any
        self.buffer = bytearray(BLOCK)
        self.fill = 0
        self.block = 0

    def get(self, key: str) -> "bytes | None":
        return self.nvs.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.nvs.put(key, value)

    def delete(self, key: str) -> None:
        self.nvs.delete(key)

    def _next(self) -> "Any":
        return esp32.Partition(esp32.Partition.RUNNING).get_next_update()

    def ota_max_size(self) -> int:
        return self._next().info()[3]

    def ota_begin(self, size: int) -> None:
        self.partition = self._next()
        if size > self.partition.info()[3]:
            raise OSError("image larger than the partition")
        self.fill = 0
        self.block = 0

    def ota_write(self, data: "Any") -> None:
        view = memoryview(data)
        while len(view):
            take = min(len(view), BLOCK - self.fill)
            self.buffer[self.fill : self.fill + take] = view[:take]
            self.fill += take
            view = view[take:]
            if self.fill == BLOCK:
                self.partition.writeblocks(self.block, self.buffer)  # erases, then writes
                self.block += 1
                self.fill = 0

    def ota_switch(self) -> None:
        if self.fill:
            for index in range(self.fill, BLOCK):
                self.buffer[index] = 0xFF  # erased flash
            self.partition.writeblocks(self.block, self.buffer)
            self.fill = 0
        self.partition.set_boot()  # raises OSError when the image does not validate

    def ota_mark_valid(self) -> None:
        esp32.Partition.mark_app_valid_cancel_rollback()

    def ota_rollback(self) -> None:
        self._next().set_boot()  # with two OTA slots the "next" one is the previous image


class Esp32Downloader(interface.Downloader):
    """HTTP(S) GET through micropython-lib ``requests``."""

    def open(self, url: str) -> "Any":
        import requests

        response = requests.get(url, timeout=30)
        if response.status_code != 200:
            response.close()
            raise OSError("HTTP " + str(response.status_code))
        return _HttpStream(response)


class _HttpStream:
    def __init__(self, response: "Any") -> None:
        self.response = response

    def read(self, size: int) -> bytes:
        return self.response.raw.read(size)

    def close(self) -> None:
        try:
            self.response.close()
        except OSError:
            return  # the socket is gone already


class UmqttTransport(interface.MqttTransport):
    """umqtt.simple over Wi-Fi, polled by the master's loop (check_msg), pinged for keepalive."""

    def __init__(self, config: dict, clock: Esp32Clock, nvs: Nvs) -> None:
        self.config = config
        self.clock = clock
        self.nvs = nvs
        self.wlan = network.WLAN(network.STA_IF)
        self.client = None  # type: Any
        self.last_ping = 0
        self.listener = None  # type: Any

    def _wifi(self) -> bool:
        wlan = self.wlan
        if not wlan.isconnected():
            wlan.active(True)
            mac = self.nvs.get("mac")  # assigned from the platform's pool at enrollment
            if mac is not None and len(mac) == 6:
                try:
                    wlan.config(mac=mac)
                except (OSError, ValueError) as exc:
                    # The chip's own MAC stays, one the registry does not know: say so.
                    print("ampfleet: the assigned MAC could not be set:", exc)
            password = self.nvs.get("wifi_pass")
            wlan.connect(self.config.get("wifi_ssid", ""), password.decode() if password else "")
            for _ in range(100):
                if wlan.isconnected():
                    break
                time.sleep_ms(100)
        return wlan.isconnected()

    def connect(self, client_id: str, will_topic: str, will_payload: bytes) -> None:
        from umqtt.simple import MQTTClient, MQTTException

        if not self._wifi():
            self.listener.on_connect_failed(False)
            return
        self.clock.sync()
        host, port, use_tls = parse_broker_url(self.config["broker_url"])
        password = self.nvs.get("mqtt_pass")
        ssl = None
        if use_tls:
            import tls

            ssl = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
            ssl.verify_mode = tls.CERT_REQUIRED
            ca_cert = self.nvs.get("ca_cert")
            if ca_cert:
                ssl.load_verify_locations(cadata=ca_cert)
            # Mutual TLS: the certificate and key the factory wrote, or the certificate renewed
            # over the contract (docs/device-contract.md 4.10), read at every connection so a
            # renewal takes effect at the next one.
            client_cert = self.nvs.get("client_cert")
            client_key = self.nvs.get("client_key")
            if client_cert and client_key:
                ssl.load_cert_chain(client_cert, client_key)
        client = MQTTClient(
            client_id,
            host,
            port=port,
            user=client_id,
            password=password,
            keepalive=KEEPALIVE_S,
            ssl=ssl,
        )
        client.set_last_will(will_topic, will_payload, retain=True, qos=1)
        client.set_callback(self._on_message)
        try:
            client.connect(clean_session=False)
        except MQTTException as exc:  # CONNACK refused; 4/5 = bad credentials
            code = exc.args[0] if exc.args else 0
            self.listener.on_connect_failed(code in (4, 5))
            return
        except OSError:
            self.listener.on_connect_failed(False)
            return
        self.client = client
        self.last_ping = time.ticks_ms()
        self.listener.on_connected()

    def _on_message(self, topic: bytes, payload: bytes) -> None:
        self.listener.on_message(topic, payload)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self.client is None:
            raise OSError("not connected")
        self.client.publish(topic, payload, retain, qos)

    def subscribe(self, topic: str, qos: int) -> None:
        if self.client is None:
            raise OSError("not connected")
        self.client.subscribe(topic, qos)

    def disconnect(self) -> None:
        client = self.client
        self.client = None
        if client is not None:
            try:
                client.disconnect()
            except OSError:
                return  # already gone

    def poll(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            client.check_msg()
            if time.ticks_diff(time.ticks_ms(), self.last_ping) >= PING_MS:
                client.ping()
                self.last_ping = time.ticks_ms()
                if self.clock.resync_due():
                    self.clock.sync()
        except OSError:
            self.client = None
            self.listener.on_disconnected()


def _rand() -> float:
    import random

    return random.getrandbits(24) / 16777216


class Esp32CardReader(interface.CardReader):
    """STUB: no RFID reader driver exists yet, so this reader never sees a card.

    A board with a reader (an MFRC522 on SPI or a PN532 on I2C) needs a driver here that
    polls for an ISO 14443 card and returns its UID as uppercase hex. Until then a board
    charges by plug-and-charge (``rfid_required`` false) or by ``charging.start`` (app, guest).
    """

    def read(self) -> "str | None":
        """Never a card (see the class docstring)."""
        return None


class MasterBoard(interface.Board):
    """The master's hardware, built from ``/config.json``."""

    def __init__(self, config: dict) -> None:
        self.clock = Esp32Clock()
        self.storage = Esp32Storage()
        self.i2c = Esp32I2C(config)
        self.cp = Esp32Pilot(config)
        self.mqtt = UmqttTransport(config, self.clock, self.storage.nvs)
        self.downloader = Esp32Downloader()
        self.rand = _rand
        self.rfid = Esp32CardReader()

    def rssi(self) -> "int | None":
        wlan = self.mqtt.wlan
        return wlan.status("rssi") if wlan.isconnected() else None

    def reset(self) -> None:
        machine.reset()

    def chip_id(self) -> "str | None":
        """machine.unique_id() in hex: on the ESP32-C3 its factory base MAC."""
        return registers.hex_id(unique_id())


def unique_id() -> bytes:
    """This MCU's unique id (the ESP32-C3's 6-byte factory MAC, from its eFuses)."""
    return bytes(machine.unique_id())


# --- slave boards -----------------------------------------------------------------------------

# IEC 61851-1 Table B.2: proximity resistor (ohm) -> cable rating (A), with +-10 % bands.
PP_CODING = ((1500, 13), (680, 20), (220, 32), (100, 63))


class RelayIO:
    """The relay board: contactor coil and feedback, pilot and proximity ADCs, NTC."""

    def __init__(self, config: dict) -> None:
        pins = config.get("relay", {})
        self.coil = machine.Pin(pins.get("coil", 7), machine.Pin.OUT, value=0)
        self.feedback = machine.Pin(pins.get("feedback", 8), machine.Pin.IN, machine.Pin.PULL_UP)
        self.cp = machine.ADC(machine.Pin(pins.get("cp_adc", 0)), atten=machine.ADC.ATTN_11DB)
        self.pp = machine.ADC(machine.Pin(pins.get("pp_adc", 1)), atten=machine.ADC.ATTN_11DB)
        self.ntc = machine.ADC(machine.Pin(pins.get("ntc_adc", 2)), atten=machine.ADC.ATTN_11DB)
        # Pilot front end: v_cp = adc_volts * gain + offset (divider and level shift).
        self.cp_gain = pins.get("cp_gain", 10.0)
        self.cp_offset = pins.get("cp_offset", -14.0)
        self.pp_pullup = pins.get("pp_pullup_ohm", 330)
        self.last_cmd_ms = time.ticks_ms()
        self.unlock = None  # type: Any

    def _pilot(self) -> tuple:
        # 1 kHz PWM: sampling for a bit over one period catches both levels.
        high = -99.0
        low = 99.0
        for _ in range(40):
            volts = self.cp.read_uv() / 1000000 * self.cp_gain + self.cp_offset
            high = max(high, volts)
            low = min(low, volts)
        return high, low

    def _pp_amps(self) -> int:
        volts = self.pp.read_uv() / 1000000
        if volts >= 3.2:
            return 0  # open: no cable
        ohms = self.pp_pullup * volts / (3.3 - volts)
        for nominal, amps in PP_CODING:
            if 0.9 * nominal <= ohms <= 1.1 * nominal:
                return amps
        return 0

    def _temperature(self) -> float:
        import math

        volts = self.ntc.read_uv() / 1000000
        ohms = 10000 * volts / max(0.001, 3.3 - volts)
        kelvin = 1 / (1 / 298.15 + math.log(ohms / 10000) / 3950)  # 10k NTC, beta 3950
        return round(kelvin - 273.15, 1)

    def refresh(self, slave: "Any", now_ms: int) -> None:
        high, low = self._pilot()
        slave.set("contactor_closed", self.feedback.value() == 0)
        slave.set("temperature_c", self._temperature())
        slave.set("cp_state", charging.cp_state(high))
        slave.set("pp_current_a", self._pp_amps())
        slave.set_private(registers.CP_HIGH_DV, round(high * 10))
        slave.set_private(registers.CP_LOW_DV, round(low * 10))

    def written(self, slave: "Any", register: int, data: bytes, now_ms: int) -> None:
        if register == registers.RELAY[registers.CONTACTOR_CMD][0]:
            self.coil.value(1 if data[0] == 1 else 0)
            self.last_cmd_ms = time.ticks_ms()

    def tick(self) -> None:
        """The watchdog: no command for CONTACTOR_WATCHDOG_MS opens the contactor."""
        if time.ticks_diff(time.ticks_ms(), self.last_cmd_ms) > registers.CONTACTOR_WATCHDOG_MS:
            self.coil.value(0)


def sensors_for(family: "Any", node: str, config: dict) -> "Any":
    """The I/O of a slave node's role (None: registers are served as the master writes them)."""
    for node_id, _, role in family.nodes:
        if node_id == node and role == "relay":
            return RelayIO(config)
    return None  # the meter's metering-IC driver is not written yet (docs/firmware.md)


def serve_i2c_target(slave: "Any", config: dict) -> None:
    """Answer the master's frames on the I2C target port, forever.

    A request arrives as one write transaction (END_WRITE: handle it), the response leaves as
    the following read (READ_REQ: clock it out, 0xFF past its end).
    """
    pins = config.get("i2c", {})
    target = machine.I2CTarget(
        0, slave.address, scl=machine.Pin(pins.get("scl", 5)), sda=machine.Pin(pins.get("sda", 4))
    )
    request = bytearray(6 + 64)
    state = {"size": 0, "response": b"", "sent": 0}

    def on_irq(t: "Any") -> None:
        flags = t.irq().flags()
        if flags & machine.I2CTarget.IRQ_WRITE_REQ:
            size = state["size"]
            state["size"] = size + t.readinto(memoryview(request)[size:])
        if flags & machine.I2CTarget.IRQ_END_WRITE:
            frame = bytes(request[: state["size"]])
            state["size"] = 0
            state["response"] = slave.handle(frame, time.ticks_ms()) or b""
            state["sent"] = 0
        if flags & machine.I2CTarget.IRQ_READ_REQ:
            response = state["response"]
            sent = state["sent"]
            chunk = response[sent : sent + 1] if sent < len(response) else b"\xff"
            t.write(chunk)
            state["sent"] = sent + 1

    triggers = (
        machine.I2CTarget.IRQ_WRITE_REQ
        | machine.I2CTarget.IRQ_END_WRITE
        | machine.I2CTarget.IRQ_READ_REQ
    )
    target.irq(on_irq, trigger=triggers, hard=False)
    while True:
        sensors = slave.sensors
        if sensors is not None and hasattr(sensors, "tick"):
            sensors.tick()
        time.sleep_ms(50)
