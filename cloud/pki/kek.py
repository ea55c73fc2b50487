"""The key-encryption key (KEK) and the sealing of private keys with it.

A private key at rest is PKCS#8 DER sealed with AES-256-GCM under the KEK, with the key's name
as associated data: without the KEK the records hold nothing usable, and a sealed key copied
into another key's row does not open. (PEM ``BestAvailableEncryption`` was the alternative: a
password-based KDF meant for typed passwords, slower for nothing with a random 256-bit key, and
binding the ciphertext to nothing.)

Where the KEK comes from, in order (docs/pki.md):

* ``pki_kek``: 32 random bytes, base64;
* ``pki_kek_file``: a file holding that base64 text (a mounted secret);
* neither, with a SQLite records database (the embedded mode): ``ampfleet/pki-kek`` under
  ``$XDG_CONFIG_HOME`` (``~/.config``), created 0600 when the first key is made. It is kept out
  of the data directory on purpose: a copy of the data directory alone opens no key.
* neither, with any other database (production): refused, naming the settings.

A KEK file inside the data directory is refused for the same reason.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.pki import KeyEncryptionError
from cloud.settings import Settings

log = logging.getLogger(__name__)

KEK_BYTES = 32
NONCE_BYTES = 12
AAD_PREFIX = b"ampfleet/pki/key/"


@dataclasses.dataclass(frozen=True)
class Kek:
    """A key-encryption key and where it came from (for messages; never the key)."""

    key: bytes = dataclasses.field(repr=False)
    source: str

    @property
    def id(self) -> str:
        """A non-secret digest naming this KEK: stored beside every key it seals."""
        return hashlib.sha256(b"ampfleet-pki-kek-id\0" + self.key).hexdigest()[:16]

    def seal(self, name: str, plaintext: bytes) -> bytes:
        """``plaintext`` sealed for the key named ``name``: nonce + ciphertext + tag."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, AAD_PREFIX + name.encode())

    def open(self, name: str, sealed: bytes, kek_id: str) -> bytes:
        """The plaintext of a key sealed by ``seal``; KeyEncryptionError when another KEK
        sealed it, or the bytes were changed or belong to another key's name."""
        if kek_id != self.id:
            raise KeyEncryptionError(
                f"the PKI key {name!r} was sealed with another key-encryption key (id "
                f"{kek_id}) than the one from {self.source} (id {self.id})"
            )
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            return AESGCM(self.key).decrypt(nonce, body, AAD_PREFIX + name.encode())
        except InvalidTag as exc:
            raise KeyEncryptionError(
                f"the PKI key {name!r} does not open: its sealed bytes were changed, or "
                "belong to another key"
            ) from exc


def new_kek_text() -> str:
    """A fresh KEK as the settings take it (base64 of 32 random bytes)."""
    return base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode()


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyEncryptionError(f"{source}: not base64") from exc
    if len(key) != KEK_BYTES:
        raise KeyEncryptionError(f"{source}: {len(key)} bytes, a KEK is {KEK_BYTES}")
    return key


def default_kek_file(environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """Where the embedded mode keeps its KEK: ``$XDG_CONFIG_HOME/ampfleet/pki-kek``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ampfleet" / "pki-kek"


def kek_file(settings: Settings) -> Path | None:
    """The KEK file the settings name (or the embedded default), None when ``pki_kek`` holds
    the key itself; KeyEncryptionError when production names none."""
    if settings.pki_kek:
        return None
    if settings.pki_kek_file:
        return Path(settings.pki_kek_file)
    if not settings.database_url.startswith("sqlite"):
        raise KeyEncryptionError(
            "the PKI needs a key-encryption key: set AMPFLEET_PKI_KEK (base64 of 32 random "
            "bytes, `ampfleet pki new-kek` makes one) or AMPFLEET_PKI_KEK_FILE"
        )
    return default_kek_file()


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def load_kek(settings: Settings, create: bool = False) -> Kek:
    """The KEK of these settings. With ``create``, a missing KEK file is made (0600, with its
    directory 0700): only when the first key of an empty keystore is about to be sealed, so
    that a KEK mount gone missing never silently replaces the key that opens the others."""
    path = kek_file(settings)
    if path is None:
        return Kek(_decode(settings.pki_kek, "AMPFLEET_PKI_KEK"), "AMPFLEET_PKI_KEK")
    source = f"the KEK file {path}"
    if _inside(path, settings.data_path):
        raise KeyEncryptionError(
            f"{source} is inside the data directory {settings.data_path}: a copy of the data "
            "directory would open every key; keep it elsewhere (AMPFLEET_PKI_KEK_FILE)"
        )
    if not path.exists():
        if not create:
            raise KeyEncryptionError(
                f"{source} does not exist, and the PKI's keys need it (set "
                "AMPFLEET_PKI_KEK_FILE or AMPFLEET_PKI_KEK to the KEK they were sealed with)"
            )
        _create(path)
        log.warning("created the PKI's key-encryption key in %s: back it up", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s is readable by others (mode %o): chmod 600 it", source, mode)
    return Kek(_decode(path.read_text(), source), source)


def _create(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: link() fails when the file
    # exists, so of two processes making it at once one wins and the other reads its key,
    # never a half-written file.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pki-kek-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(new_kek_text() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
