"""The registry as the bridge sees it: who may open an OCPP connection, and what it learns.

``Gatekeeper.admit`` decides a handshake (blocking: database and argon2; the server calls it
in a worker thread):

* the charger id of the URL must be a device of the registry with ``protocol = ocpp`` (the
  registry is the whitelist: a record in ``manufactured`` or ``provisioned`` state admits a
  charger that never connected before); unknown ids answer 404, as OCPP 2.0.1 part 4 asks;
* suspended and decommissioned chargers answer 403;
* security profiles 1 and 2 (HTTP Basic, OCPP 2.0.1 A00.FR.2xx / 1.6 security whitepaper 2):
  the user name must be the charger id and the password its device credential, stored as an
  argon2id hash like every device's (issued by ``POST /devices/{id}/credentials``); positive
  checks are cached per (charger, hash) as the broker's registry does, so a reconnect storm
  costs one argon2 per charger; anything else answers 401;
* profile 3 (mutual TLS): the TLS layer has verified the certificate chain; the certificate's
  CN must be the charger id of the URL (A00.FR.3xx), or 401.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.db import Database, utcnow
from cloud.devices.credentials import REFUSED_STATES, DeviceCredential
from cloud.devices.models import Device, Protocol
from cloud.identity.passwords import SecretHasher
from cloud.ocpp import HandshakeRefusedError
from cloud.ocpp.models import OcppCharger
from cloud.ocpp.uplink import Boot
from firmware.core.topics import is_device_id

CACHE_TTL = 30.0
CACHE_SIZE = 100_000


@dataclasses.dataclass(frozen=True)
class Admission:
    """A charger let in: what its session needs to know from the registry."""

    device_id: str
    hardware_family: str
    lenient: bool
    firmware_version: str | None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header (RFC 7617), or None."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class Gatekeeper:
    """Admission of OCPP connections against the records database."""

    def __init__(
        self,
        database: Database,
        hasher: SecretHasher,
        profile: int,
        *,
        cache_ttl: float = CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.hasher = hasher
        self.profile = profile
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._cache: collections.OrderedDict[tuple[str, str], tuple[bytes, float]] = (
            collections.OrderedDict()
        )
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.argon2_checks = 0

    def admit(
        self, charger_id: str, authorization: str | None, certificate_cn: str | None
    ) -> Admission:
        """Let the charger in, or raise ``HandshakeRefusedError`` with the HTTP status."""
        if not is_device_id(charger_id):
            raise HandshakeRefusedError(404, "unknown charger")
        with self.database.session() as session:
            row = session.execute(
                select(Device, DeviceCredential, OcppCharger)
                .outerjoin(DeviceCredential, DeviceCredential.device_id == Device.id)
                .outerjoin(OcppCharger, OcppCharger.device_id == Device.id)
                .where(Device.id == charger_id)
            ).first()
            if row is None or row[0].protocol is not Protocol.OCPP:
                self._burn(authorization)
                raise HandshakeRefusedError(404, "unknown charger")
            device, credential, charger = row
            if device.state in REFUSED_STATES:
                self._burn(authorization)
                raise HandshakeRefusedError(403, f"charger is {device.state.value}")
            admission = Admission(
                device.id,
                device.hardware_family,
                bool(charger.lenient) if charger is not None else False,
                charger.firmware_version if charger is not None else None,
            )
            secret_hash = credential.secret_hash if credential is not None else None
            revoked = credential is not None and credential.revoked_at is not None
        if self.profile == 3:
            if certificate_cn != device.id:
                raise HandshakeRefusedError(401, "certificate CN is not the charger id")
            return admission
        given = basic_credentials(authorization)
        if given is None:
            raise HandshakeRefusedError(401, "HTTP Basic authentication required")
        user, password = given
        if user != device.id or secret_hash is None or revoked:
            self.hasher.verify(None, password)  # the same cost: nothing to learn from timing
            raise HandshakeRefusedError(401, "wrong charger id or password")
        if not self._verify(device.id, secret_hash, password):
            raise HandshakeRefusedError(401, "wrong charger id or password")
        return admission

    def _burn(self, authorization: str | None) -> None:
        given = basic_credentials(authorization)
        if given is not None and self.profile != 3:
            self.hasher.verify(None, given[1])

    def _verify(self, device_id: str, secret_hash: str, password: str) -> bool:
        key = (device_id, secret_hash)
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now and hmac.compare_digest(cached[0], digest):
                self._cache.move_to_end(key)
                return True
            self.argon2_checks += 1
        if not self.hasher.verify(secret_hash, password):
            return False
        with self._lock:
            self._cache[key] = (digest, now + self._cache_ttl)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return True


class Recorder:
    """What the bridge learns about chargers (the OCPP version they connect with, what their
    BootNotification says), written in batches: a connection storm of thousands of chargers
    costs a few transactions, not two per charger."""

    def __init__(self, database: Database, bridge_id: str | None = None) -> None:
        self.database = database
        self.bridge_id = bridge_id  # written on each charger it connects (cloud.ocpp.bridges)
        self._pending: dict[str, tuple[str, Boot | None]] = {}
        self._lock = threading.Lock()

    def connected(self, device_id: str, version: str) -> None:
        """Note the OCPP version a charger connected with."""
        with self._lock:
            boot = self._pending.get(device_id, (version, None))[1]
            self._pending[device_id] = (version, boot)

    def booted(self, device_id: str, version: str, boot: Boot) -> None:
        """Note what a BootNotification said."""
        with self._lock:
            self._pending[device_id] = (version, boot)

    def flush(self) -> int:
        """Write what was noted since the last flush (blocking); how many chargers."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        # The rows a batch creates are new; a concurrent creator (another bridge instance,
        # the API) makes the insert fail: the retry then finds them.
        for attempt in (1, 2):
            try:
                with self.database.transaction() as session:
                    for device_id, (version, boot) in pending.items():
                        _apply(session, device_id, version, boot, self.bridge_id)
                return len(pending)
            except IntegrityError:
                if attempt == 2:
                    raise
        return 0


def _apply(
    session: Session, device_id: str, version: str, boot: Boot | None, bridge_id: str | None
) -> None:
    charger = _charger(session, device_id)
    if charger is None:
        return
    charger.ocpp_version = version
    if bridge_id is not None:
        charger.bridge_id = bridge_id
    if boot is not None:
        charger.vendor = boot.vendor[:64]
        charger.model = boot.model[:64]
        charger.serial_number = (boot.serial_number or "")[:64] or None
        charger.firmware_version = (boot.firmware_version or "")[:64] or None
        charger.last_boot_at = utcnow()


def _charger(session: Session, device_id: str) -> OcppCharger | None:
    if session.get(Device, device_id) is None:
        return None  # deleted meanwhile
    charger = session.get(OcppCharger, device_id)
    if charger is None:
        charger = OcppCharger(device_id=device_id, lenient=False)
        session.add(charger)
    return charger
