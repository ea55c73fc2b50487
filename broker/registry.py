"""Broker-side view of the device registry: who may connect, and who must be disconnected.

``DeviceRegistry`` answers the embedded broker's questions against the records database:

* ``authenticate`` -- a CONNECT's username/password/client id: the service account (its
  password), or a device with an active credential, not suspended or decommissioned, whose
  secret matches the argon2id hash; anonymous clients are refused. Positive verifications are
  cached per (username, hash) for ``cache_ttl`` seconds, keyed also by a keyed digest of the
  password, so a reconnect storm costs one argon2 per device, not one per CONNECT.
* ``stale`` -- which of the connected devices lost their right to be connected since they
  authenticated (revoked, rotated, suspended, decommissioned, deleted).
``active_accounts`` lists every device with an active credential or a certificate in force, for
a resync of Mosquitto; ``account_of`` one of them, for a refresh after a change.

Everything here is blocking (database, argon2): the amqtt plugin calls it in a worker thread.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection

from sqlalchemy import select

from broker.acl import is_device_id
from broker.admin import CERTIFICATE_ONLY, BrokerAdmin, DeviceAccount
from cloud.db import Database, utcnow
from cloud.devices.credentials import DeviceCredential, credential_version, may_connect
from cloud.devices.models import Device, LifecycleState
from cloud.identity.passwords import SecretHasher
from cloud.pki.models import CertificateState, DeviceCertificate

log = logging.getLogger(__name__)

CACHE_TTL = 30.0  # seconds a positive verification is reused
CACHE_SIZE = 100_000  # entries; the oldest go first beyond that
_CHUNK = 500  # ids per IN (...) query


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who an authenticated MQTT session is."""

    username: str
    is_service: bool
    # The credential the device authenticated with: a rotation changes it, and the session
    # must then go (``stale``).
    secret_hash: str | None = None
    # The OCPP bridge's account (broker.acl: speaks for the OCPP chargers it holds).
    is_bridge: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of a CONNECT: an identity, or None and why (for the broker's log)."""

    identity: Identity | None
    reason: str


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


class DeviceRegistry:
    """Authentication and re-checks of MQTT clients against the records database."""

    def __init__(
        self,
        database: Database,
        hasher: SecretHasher,
        service_user: str,
        service_password: str,
        *,
        cache_ttl: float = CACHE_TTL,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        bridge_user: str | None = None,
        bridge_password: str | None = None,
    ) -> None:
        self.database = database
        self.hasher = hasher
        self.service_user = service_user
        self._service_password = service_password.encode()
        self.bridge_user = bridge_user
        self._bridge_password = (bridge_password or "").encode()
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._clock = clock
        # (username, secret hash) -> (keyed digest of the verified password, expiry).
        self._cache: collections.OrderedDict[tuple[str, str], tuple[bytes, float]] = (
            collections.OrderedDict()
        )
        self._cache_key = secrets.token_bytes(32)  # per process: digests are useless elsewhere
        self._lock = threading.Lock()
        self.argon2_checks = 0  # counted, so tests (and metrics) can see the cache work

    def authenticate(
        self,
        username: str | None,
        password: str | bytes | None,
        client_id: str | None,
    ) -> Decision:
        """Decide a CONNECT. Never raises for bad input; database errors propagate."""
        username = _text(username)
        secret = _text(password)
        if not username:
            return Decision(None, "anonymous clients are refused")
        if secret is None:
            return Decision(None, "no password")
        if username == self.service_user:
            # compare_digest: the time taken does not tell how much of the password matched.
            if hmac.compare_digest(secret.encode(), self._service_password):
                return Decision(Identity(username, is_service=True), "service account")
            return Decision(None, "wrong service password")
        if username == self.bridge_user and self._bridge_password:
            if hmac.compare_digest(secret.encode(), self._bridge_password):
                identity = Identity(username, is_service=False, is_bridge=True)
                return Decision(identity, "OCPP bridge account")
            return Decision(None, "wrong bridge password")
        if not is_device_id(username):
            self.hasher.verify(None, secret)  # same cost as a real check: no user enumeration
            return Decision(None, "username is not a device id")
        if client_id != username:
            # Device id = client id = username: a device cannot take another's session.
            return Decision(None, f"client id {client_id!r} is not the username")
        row = self._credential(username)
        if row is None:
            self.hasher.verify(None, secret)
            return Decision(None, "no credential")
        secret_hash, allowed, why = row
        if not allowed:
            self.hasher.verify(None, secret)
            return Decision(None, why)
        if not self._verify(username, secret_hash, secret):
            return Decision(None, "wrong secret")
        return Decision(Identity(username, is_service=False, secret_hash=secret_hash), "device")

    def _credential(self, device_id: str) -> tuple[str, bool, str] | None:
        stmt = (
            select(DeviceCredential.secret_hash, DeviceCredential.revoked_at, Device.state)
            .join(Device, Device.id == DeviceCredential.device_id)
            .where(DeviceCredential.device_id == device_id)
        )
        with self.database.session() as session:
            row = session.execute(stmt).first()
        if row is None:
            return None
        secret_hash, revoked_at, state = row
        if revoked_at is not None:
            return secret_hash, False, "credential revoked"
        if not may_connect(state, revoked_at):
            return secret_hash, False, f"device is {state.value}"
        return secret_hash, True, "active"

    def _verify(self, username: str, secret_hash: str, secret: str) -> bool:
        key = (username, secret_hash)
        digest = hmac.new(self._cache_key, secret.encode(), hashlib.sha256).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > now and hmac.compare_digest(cached[0], digest):
                self._cache.move_to_end(key)
                return True
        with self._lock:
            self.argon2_checks += 1
        if not self.hasher.verify(secret_hash, secret):
            return False
        with self._lock:
            self._cache[key] = (digest, now + self._cache_ttl)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True

    def stale(self, grants: dict[str, Identity]) -> list[str]:
        """Client ids (of ``grants``: client id -> identity at CONNECT) that must go now."""
        devices = {cid: g for cid, g in grants.items() if not (g.is_service or g.is_bridge)}
        current: dict[str, tuple[str, bool]] = {}
        ids = sorted({g.username for g in devices.values()})
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            stmt = (
                select(
                    DeviceCredential.device_id,
                    DeviceCredential.secret_hash,
                    DeviceCredential.revoked_at,
                    Device.state,
                )
                .join(Device, Device.id == DeviceCredential.device_id)
                .where(DeviceCredential.device_id.in_(chunk))
            )
            with self.database.session() as session:
                for device_id, secret_hash, revoked_at, state in session.execute(stmt):
                    current[device_id] = (secret_hash, may_connect(state, revoked_at))
        gone = []
        for client_id, grant in devices.items():
            now = current.get(grant.username)
            if now is None or not now[1] or now[0] != grant.secret_hash:
                gone.append(client_id)
        return sorted(gone)


def device_ids(database: Database) -> set[str]:
    """The id of every device in the registry, with or without credentials."""
    with database.session() as session:
        return set(session.scalars(select(Device.id)))


def active_accounts(
    database: Database, only: Collection[str] | None = None, *, passwords: bool = True
) -> list[DeviceAccount]:
    """Every device holding an active credential (passwords unknown) or a certificate in force
    (issued, not revoked, not expired), for a resync; ``only`` narrows it to those ids.

    ``enabled`` is False for suspended and decommissioned devices: the broker keeps their
    account (and password) but refuses them until they are active again. ``quarantined`` is
    True for a device in quarantine or not approved (``approved_at`` unset): it may publish its
    status only. A device without an active password credential, or every device when
    ``passwords`` is False (``broker_device_passwords`` off), authenticates by certificate only
    (version ``CERTIFICATE_ONLY``).
    """
    now = utcnow()
    # Columns, not entities: a resync of 100,000 devices should not build 100,000 objects.
    state = (Device.state, Device.quarantine_reason.is_not(None), Device.approved_at.is_(None))
    found: dict[str, tuple[str, LifecycleState, bool, bool]] = {}
    with database.session() as session:
        if passwords:
            stmt = (
                select(DeviceCredential.device_id, DeviceCredential.secret_hash, *state)
                .join(Device, Device.id == DeviceCredential.device_id)
                .where(DeviceCredential.revoked_at.is_(None))
            )
            for chunk in _chunks(only):
                narrowed = stmt if chunk is None else stmt.where(Device.id.in_(chunk))
                for device_id, secret_hash, lifecycle, held, unapproved in session.execute(
                    narrowed
                ):
                    found[device_id] = (
                        credential_version(secret_hash),
                        lifecycle,
                        bool(held),
                        bool(unapproved),
                    )
        certified = (
            select(Device.id, *state)
            .join(DeviceCertificate, DeviceCertificate.device_id == Device.id)
            .where(
                DeviceCertificate.state == CertificateState.ISSUED,
                DeviceCertificate.not_before <= now,
                DeviceCertificate.not_after > now,
            )
            .distinct()
        )
        for chunk in _chunks(only):
            by_id = certified if chunk is None else certified.where(Device.id.in_(chunk))
            for device_id, lifecycle, held, unapproved in session.execute(by_id):
                found.setdefault(
                    device_id, (CERTIFICATE_ONLY, lifecycle, bool(held), bool(unapproved))
                )
    return [
        DeviceAccount(
            device_id,
            version,
            may_connect(lifecycle, None),
            quarantined=in_quarantine or not_approved,
        )
        for device_id, (version, lifecycle, in_quarantine, not_approved) in sorted(found.items())
    ]


def account_of(
    database: Database, device_id: str, *, passwords: bool = True
) -> DeviceAccount | None:
    """The broker account ``device_id`` should have now (None: it holds no credential in
    force), for ``BrokerAdmin.refresh_device``."""
    accounts = active_accounts(database, [device_id], passwords=passwords)
    return accounts[0] if accounts else None


def _chunks(only: Collection[str] | None) -> list[list[str] | None]:
    if only is None:
        return [None]
    ids = sorted(only)
    return [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]


def refresher(admin: BrokerAdmin, database: Database, *, passwords: bool) -> Callable[[str], None]:
    """``refresh(device_id)``: give ``admin``'s broker that device's account as the registry
    has it now, for workers that change a device's rights (the status worker's quarantine)."""

    def refresh(device_id: str) -> None:
        admin.refresh_device(device_id, account_of(database, device_id, passwords=passwords))

    return refresh
