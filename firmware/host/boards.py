"""Enrolled simulated boards as simulated chargers that connect over mutual TLS.

``ampfleet factory enroll --simulated-board DIR`` leaves a board directory
(firmware/host/esp32c3.py): the key the board made in ``DIR/secure/key.pem`` and, in the NVS
partition inside ``DIR/flash.bin``, its device id, broker URL, certificate chain
(``client_cert``) and the platform's CA chain (``ca_cert``); a station-made key is in the NVS
too (``client_key``). ``load_board`` reads all that back, as the board would at boot;
``ClientTls`` makes the TLS client context of one charger from what its flash holds *at each
connection*, so that a certificate renewed over the device contract (contract 4.10) is used from
the next connection on, as on the board.

    boards = load_boards([Path("boards")])            # a board directory, or a folder of them
    fleet = Fleet.from_boards(boards, "127.0.0.1", 8883, server_ca_file="ca.pem")
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

from firmware.core import certs, guestpass
from firmware.hal.interface import Storage
from firmware.host.storage import MemoryStorage
from firmware.tools import ToolError, nvs, nvsread
from firmware.tools.partitions import partition

NVS_CA = "ca_cert"
# The NVS records the factory writes that the charger itself reads (identity aside): its
# certificate and key, the CA chain, the platform's keys for guest credentials.
CHARGER_RECORDS = (certs.NVS_CERT, certs.NVS_KEY, NVS_CA, guestpass.NVS_KEY)


@dataclasses.dataclass(frozen=True)
class BoardIdentity:
    """What an enrolled board holds: its id, broker, and the NVS records a charger needs
    (``client_cert``, ``client_key``, ``ca_cert``, ``guest_keys``)."""

    device_id: str
    broker_url: str
    records: dict[str, bytes]
    directory: Path | None = None

    def storage(self, fw: str = "1.0.0") -> MemoryStorage:
        """A simulated flash holding these records, for a ``SimCharger``."""
        storage = MemoryStorage(fw)
        for key, value in self.records.items():
            storage.put(key, value)
        return storage


def load_board(directory: Path) -> BoardIdentity:
    """The identity an enrolled simulated board holds in ``directory``; ToolError when it was
    not enrolled (no NVS, no certificate or no key)."""
    directory = Path(directory)
    part = partition("nvs")
    try:
        with open(directory / "flash.bin", "rb") as flash:
            flash.seek(part.offset)
            image = flash.read(part.size)
    except OSError as exc:
        raise ToolError(f"{directory}: no simulated board here ({exc})") from exc
    values = {key: value for (ns, key), value in nvsread.read(image).items() if ns == nvs.NAMESPACE}
    if "device_id" not in values:
        raise ToolError(f"{directory}: the board was not enrolled (its NVS is empty)")
    records = {key: values[key] for key in CHARGER_RECORDS if key in values}
    if certs.NVS_KEY not in records:
        key_file = directory / "secure" / "key.pem"
        if key_file.exists():
            records[certs.NVS_KEY] = key_file.read_bytes()
    for needed in (certs.NVS_CERT, certs.NVS_KEY):
        if needed not in records:
            raise ToolError(f"{directory}: no {needed} (enrolled with a password only?)")
    return BoardIdentity(
        values["device_id"].decode(),
        values.get("broker_url", b"").decode(),
        records,
        directory,
    )


def load_boards(paths: Iterable[Path]) -> list[BoardIdentity]:
    """Each path is a board directory (it has ``board.json``) or a directory of them (taken in
    name order)."""
    found = []
    for path in paths:
        path = Path(path)
        if (path / "board.json").exists():
            found.append(load_board(path))
            continue
        boards = sorted(p for p in path.iterdir() if (p / "board.json").exists())
        if not boards:
            raise ToolError(f"{path}: neither a simulated board nor a directory of them")
        found.extend(load_board(p) for p in boards)
    ids = [board.device_id for board in found]
    if len(set(ids)) != len(ids):
        raise ToolError("the same device appears twice: " + json.dumps(ids))
    return found


class _Entries:
    """NVS content given as (key, value) pairs (``nvs.NvsContent``)."""

    def __init__(self, pairs: list[tuple[str, bytes]]) -> None:
        self.pairs = pairs

    def entries(self) -> list[tuple[str, bytes]]:
        """(key, value) in the order they are written."""
        return self.pairs


def save_board(board: BoardIdentity, storage: Storage) -> bool:
    """Write a certificate renewed while the charger ran back into its board directory, so the
    next run presents it: the certificate into the NVS in ``flash.bin``, a new key where the
    old one was (``secure/key.pem``, or the NVS). False when nothing changed."""
    directory = board.directory
    certificate = storage.get(certs.NVS_CERT)
    key = storage.get(certs.NVS_KEY)
    if directory is None or certificate is None or key is None:
        return False
    if (certificate, key) == (board.records.get(certs.NVS_CERT), board.records.get(certs.NVS_KEY)):
        return False
    part = partition("nvs")
    with open(directory / "flash.bin", "r+b") as flash:
        flash.seek(part.offset)
        values = {
            k: v
            for (ns, k), v in nvsread.read(flash.read(part.size)).items()
            if ns == nvs.NAMESPACE
        }
        values[certs.NVS_CERT] = certificate
        key_file = directory / "secure" / "key.pem"
        if certs.NVS_KEY in values or not key_file.exists():
            values[certs.NVS_KEY] = key
        else:
            fd = os.open(key_file.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
            os.replace(key_file.with_suffix(".new"), key_file)
        image = nvs.partition(nvs.csv_text(_Entries(list(values.items()))), part.size)
        flash.seek(part.offset)
        flash.write(image)
    return True


def client_context(
    certificate: bytes,
    key: bytes,
    server_ca_file: str | None = None,
    server_ca: bytes | None = None,
) -> ssl.SSLContext:
    """A TLS client context that presents ``certificate`` (the chain, PEM) with ``key`` and
    trusts the server's CA (``server_ca_file``, else ``server_ca`` PEM, else the system's)."""
    context = ssl.create_default_context(
        cafile=server_ca_file or None,
        cadata=server_ca.decode() if server_ca and not server_ca_file else None,
    )
    # ssl loads a client certificate from files only: a private directory, gone at once.
    with tempfile.TemporaryDirectory(prefix="ampfleet-tls-") as scratch:
        cert_file = os.path.join(scratch, "cert.pem")
        key_file = os.path.join(scratch, "key.pem")
        for path, data in ((cert_file, certificate), (key_file, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        context.load_cert_chain(cert_file, key_file)
    return context


class ClientTls:
    """The TLS client context of one simulated charger, made from its flash at each connection
    (``GmqttTransport`` calls it): a renewed certificate is presented from the next connection
    on. Contexts are reused while the certificate and key stay the same."""

    __slots__ = ("_cached", "_made_from", "server_ca", "server_ca_file", "storage")

    def __init__(
        self, storage: Storage, server_ca_file: str | None = None, server_ca: bytes | None = None
    ) -> None:
        self.storage = storage
        self.server_ca_file = server_ca_file
        self.server_ca = server_ca
        self._made_from: tuple[bytes, bytes] | None = None
        self._cached: ssl.SSLContext | None = None

    def __call__(self) -> ssl.SSLContext:
        """The context for the next connection."""
        certificate = self.storage.get(certs.NVS_CERT)
        key = self.storage.get(certs.NVS_KEY)
        if certificate is None or key is None:
            raise ToolError("no client certificate or key in the charger's flash")
        if self._cached is None or self._made_from != (certificate, key):
            self._cached = client_context(certificate, key, self.server_ca_file, self.server_ca)
            self._made_from = (certificate, key)
        return self._cached
