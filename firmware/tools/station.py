"""A factory station's side of enrollment: what it reads from a board, the key and CSR it
makes, and what it writes into the board's NVS. The HTTP calls and processes are the shell's
(``cloud/cli/factory.py``).

The board is reached through esptool only: ``Esptool`` runs one esptool command line (as
``firmware.tools.flashing`` spells it) and returns what esptool printed. On the line that is a
process (``python -m esptool``); in tests and demos it is ``firmware.host.esp32c3``, a simulated
ESP32-C3 that answers the same command lines from its eFuses and flash.

Keys: stock MicroPython cannot make an EC key pair or a CSR on the chip (no public-key crypto in
its ``cryptolib``/``hashlib``), so on a real board the station makes the device's key, builds the
CSR, and writes key, certificate and CA chain into the NVS partition. A board that can make its
key itself (the simulated board; firmware with an EC library) is asked for a CSR instead, and
the private key never leaves it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from firmware.tools import ToolError, flashing, nvs

#: Runs one esptool command line; returns its output (ToolError when esptool fails).
Esptool = Callable[[list[str]], str]


class KeyOnBoard(Protocol):
    """A board that makes its own key pair and answers with a CSR (CN = the device id)."""

    def make_csr(self, device_id: str) -> str:
        """A PEM CSR for ``device_id``; the private key stays on the board."""
        ...


def read_mac(run: Esptool, port: str, baud: int) -> str:
    """The chip's base MAC as esptool read-mac prints it: ``AA:BB:CC:DD:EE:FF``."""
    return flashing.parse_mac(run(flashing.mac_command(port, baud))).upper()


def unique_id(mac: str) -> str:
    """An ESP32-C3's unique id as the firmware announces it (contract 4.2 ``hw``): its base
    MAC (what machine.unique_id() returns) in lowercase hex."""
    return mac.replace(":", "").replace("-", "").lower()


def make_key_and_csr(device_id: str) -> tuple[bytes, str]:
    """A fresh EC P-256 key (PEM, PKCS#8, unencrypted: it goes into the board's NVS) and a CSR
    whose subject CN is ``device_id``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    nvs.check_device_id(device_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclasses.dataclass(frozen=True)
class EnrolledNvs:
    """The NVS partition of an enrolled device (namespace ``ampfleet``, every value a blob).

    ``client_cert`` is the device certificate and its issuers, ``ca_cert`` the platform's CA
    chain; ``client_key`` only when the station made the key (a board that makes its own keeps
    it elsewhere). ``mac`` when the address came from the pool: the firmware sets it on its
    Wi-Fi interface at boot (a chip's own MAC needs nothing).
    """

    device_id: str
    broker_url: str
    client_cert: bytes
    ca_cert: bytes
    client_key: bytes | None = None
    mac: str | None = None
    wifi_ssid: str | None = None
    wifi_password: str | None = None
    # The platform's guest-credential keys (the enrollment answer's ``guest_keys``): public.
    guest_keys: bytes | None = None

    def __post_init__(self) -> None:
        nvs.check_device_id(self.device_id)
        if self.guest_keys is not None:
            nvs.check_guest_keys(self.guest_keys)
        nvs.check_broker_url(self.broker_url)
        nvs.check_ca_cert(self.ca_cert)
        nvs.check_ca_cert(self.client_cert)
        if self.wifi_ssid is not None:
            nvs.check_wifi_ssid(self.wifi_ssid)
        if self.wifi_password is not None:
            if self.wifi_ssid is None:
                raise ToolError("a Wi-Fi password needs a Wi-Fi SSID")
            nvs.check_wifi_password(self.wifi_password)

    def entries(self) -> list[tuple[str, bytes]]:
        """(key, value) in the order they are written; absent options are left out."""
        values: list[tuple[str, bytes | None]] = [
            ("device_id", self.device_id.encode()),
            ("broker_url", self.broker_url.encode()),
            ("ca_cert", self.ca_cert),
            ("client_cert", self.client_cert),
            ("client_key", self.client_key),
            ("mac", None if self.mac is None else bytes.fromhex(unique_id(self.mac))),
            ("wifi_ssid", None if self.wifi_ssid is None else self.wifi_ssid.encode()),
            ("wifi_pass", None if self.wifi_password is None else self.wifi_password.encode()),
            (nvs.GUEST_KEYS, self.guest_keys),
        ]
        return [(key, value) for key, value in values if value is not None]
