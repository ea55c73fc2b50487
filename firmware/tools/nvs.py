"""A device's NVS partition: its identity, MQTT credentials, broker and Wi-Fi, and the platform's
public keys for guest credentials, made at the factory and flashed at 0x9000 (see
``partitions``).

The content is written first as the CSV that ESP-IDF's ``nvs_partition_gen`` reads, then turned
into the binary by that same package from that same CSV, so the two always agree and the CSV can
be replayed with ``python -m esp_idf_nvs_partition_gen generate``.

Every value is a blob, strings included: MicroPython's ``esp32.NVS`` reads blobs and i32s only
(``esp32.NVS("ampfleet").get_blob("device_id", buf)``), not NVS strings.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from firmware.core import guestpass
from firmware.core.contract import is_device_id
from firmware.tools import ToolError

NAMESPACE = "ampfleet"
PAGE = 0x1000
# Read/write NVS needs three pages at least; one of them stays erased for garbage collection.
MIN_SIZE = 3 * PAGE
SECRET_KEYS = frozenset({"mqtt_pass", "wifi_pass"})
GUEST_KEYS = guestpass.NVS_KEY  # "guest_keys"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class DeviceNvs:
    """What one device gets in its NVS partition; checked on creation."""

    device_id: str
    mqtt_password: str
    broker_url: str
    ca_cert: bytes | None = None
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    # The platform's guest-credential keys: ``firmware.core.guestpass.nvs_record`` (the cloud
    # gives it: ``cloud.access.guestpass.nvs_record``). Public: no secret in it.
    guest_keys: bytes | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        check_password(self.mqtt_password)
        check_broker_url(self.broker_url)
        if self.ca_cert is not None:
            check_ca_cert(self.ca_cert)
        if self.wifi_password is not None and self.wifi_ssid is None:
            raise ToolError("a Wi-Fi password needs a Wi-Fi SSID")
        if self.wifi_ssid is not None:
            check_wifi_ssid(self.wifi_ssid)
        if self.wifi_password is not None:
            check_wifi_password(self.wifi_password)
        if self.guest_keys is not None:
            check_guest_keys(self.guest_keys)

    def entries(self) -> list[tuple[str, bytes]]:
        """(key, value) in the order they are written; absent options are left out."""
        values: list[tuple[str, bytes | None]] = [
            ("device_id", self.device_id.encode()),
            ("mqtt_pass", self.mqtt_password.encode()),
            ("broker_url", self.broker_url.encode()),
            ("ca_cert", self.ca_cert),
            ("wifi_ssid", None if self.wifi_ssid is None else self.wifi_ssid.encode()),
            ("wifi_pass", None if self.wifi_password is None else self.wifi_password.encode()),
            (GUEST_KEYS, self.guest_keys),
        ]
        return [(key, value) for key, value in values if value is not None]


def check_device_id(device_id: str) -> str:
    """``device_id`` when the device contract accepts it as a device id (§1)."""
    if not is_device_id(device_id):
        raise ToolError(
            f"device id {device_id!r}: 1-64 letters, digits, '-', '_' or '.', starting with a "
            "letter or digit"
        )
    return device_id


def check_password(password: str) -> str:
    """``password`` when it is a usable MQTT password (it is never echoed in the error)."""
    if not password or _CONTROL.search(password):
        raise ToolError("the MQTT password is empty or holds control characters")
    return password


def check_broker_url(url: str) -> str:
    """``url`` when it is an mqtt:// or mqtts:// URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or _CONTROL.search(url):
        raise ToolError(f"broker URL {url!r}: expected mqtts://host[:port] (or mqtt://)")
    return url


def check_ca_cert(pem: bytes) -> bytes:
    """``pem`` when it holds one or more PEM X.509 certificates (a CA bundle)."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ToolError(f"not a PEM certificate: {exc}") from exc
    return pem


def check_guest_keys(record: bytes) -> bytes:
    """``record`` when every entry of it is a P-256 public key the charger will use (a record
    the firmware would silently thin out is refused here, at the factory)."""
    try:
        entries = json.loads(record)
    except ValueError as exc:
        raise ToolError(f"guest keys: not JSON ({exc})") from exc
    kept = guestpass.keys_from_nvs(record)
    if not isinstance(entries, dict) or not entries or len(kept) != len(entries):
        raise ToolError("guest keys: expected {key id: base64url P-256 point}, every one valid")
    return record


def check_wifi_ssid(ssid: str) -> str:
    """``ssid`` when it is 1-32 bytes long (IEEE 802.11)."""
    if not 1 <= len(ssid.encode()) <= 32:
        raise ToolError(f"Wi-Fi SSID {ssid!r}: 1 to 32 bytes")
    return ssid


def check_wifi_password(password: str) -> str:
    """``password`` when it is a WPA2 passphrase (8-63 characters) or a 64-hex-digit key."""
    if not (8 <= len(password) <= 63 or re.fullmatch(r"[0-9A-Fa-f]{64}", password)):
        raise ToolError("the Wi-Fi password is not 8 to 63 characters (WPA2) nor 64 hex digits")
    return password


def check_size(size: int) -> int:
    """``size`` when it can hold a read/write NVS partition."""
    if size % PAGE or size < MIN_SIZE:
        raise ToolError(f"{size:#x}: a multiple of {PAGE:#x} (4096), at least {MIN_SIZE:#x}")
    return size


class NvsContent(Protocol):
    """What goes into an NVS partition: ``DeviceNvs``, or an enrolled device's
    (``firmware.tools.station.EnrolledNvs``)."""

    def entries(self) -> list[tuple[str, bytes]]:
        """(key, value) in the order they are written."""
        ...


def csv_text(content: NvsContent) -> str:
    """The partition as an nvs_partition_gen CSV. It holds the secrets in clear."""
    out = io.StringIO()
    out.write(
        "# ampfleet device NVS: every value is a blob (hex2bin), as MicroPython's esp32.NVS\n"
        "# reads blobs only. Holds secrets: keep it like a password.\n"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "type", "encoding", "value"])
    writer.writerow([NAMESPACE, "namespace", "", ""])
    for key, value in content.entries():
        writer.writerow([key, "data", "hex2bin", value.hex()])
    return out.getvalue()


def partition(csv_source: str, size: int) -> bytes:
    """The NVS partition binary of ``size`` bytes for a CSV, as nvs_partition_gen makes it."""
    from esp_idf_nvs_partition_gen import nvs_partition_gen as gen

    check_size(size)
    rows = csv.DictReader(line for line in csv_source.splitlines() if not line.startswith("#"))
    out = io.BytesIO()
    # Like `nvs_partition_gen generate`: the last page is reserved (kept erased) and not
    # offered to nvs_open.
    nvs = gen.nvs_open(out, size - PAGE, gen.Page.VERSION2)
    try:
        for row in rows:
            gen.write_entry(nvs, row["key"], row["type"], row["encoding"], row["value"])
        gen.nvs_close(nvs)
    except (gen.InputError, gen.InsufficientSizeError, gen.PageFullError) as exc:
        raise ToolError(f"the NVS content does not fit {size:#x} bytes: {exc}") from exc
    data = out.getvalue()
    assert len(data) == size, (len(data), size)
    return data
