"""Device credentials: the MQTT password of each device, stored only as an argon2id hash.

A device authenticates to the broker with username = client id = its device id and a random
password that the API returns once (at issue and at rotation). The registry keeps one row per
device; what a broker needs to decide whether a CONNECT is allowed is here, I/O-free:

* ``may_connect(state, revoked_at)`` -- the credential is active and the device is neither
  suspended nor decommissioned;
* ``credential_version(secret_hash)`` -- a short, non-secret fingerprint of the credential
  generation, so a broker that only ever saw the plain password (Mosquitto) can tell whether
  it still holds the current one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.db import Base, utcnow
from cloud.devices.models import LifecycleState, Protocol

# Devices in these states are refused by the broker even with a valid secret.
REFUSED_STATES = frozenset({LifecycleState.SUSPENDED, LifecycleState.DECOMMISSIONED})

# 32 random bytes, URL-safe base64: 43 characters, 256 bits. Brute force is hopeless whatever
# the broker's own hash (Mosquitto's PBKDF2 with 101 iterations included).
PASSWORD_BYTES = 32


class DeviceCredential(Base):
    """The MQTT credential of one device. Only the hash of the secret is stored."""

    __tablename__ = "device_credentials"

    # One credential per device; it goes with the device when the record is deleted.
    device_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    # argon2id (cloud.identity.passwords.SecretHasher), with its parameters and salt.
    secret_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[dt.datetime | None]
    # Set on revocation: the row stays, so the history (and GET) can tell "revoked" from "never".
    revoked_at: Mapped[dt.datetime | None]

    @property
    def state(self) -> str:
        """``active`` or ``revoked``."""
        return "revoked" if self.revoked_at is not None else "active"

    @property
    def version(self) -> str:
        """The fingerprint of this credential generation (see ``credential_version``)."""
        return credential_version(self.secret_hash)


# OCPP chargers use the credential as their HTTP Basic password, which OCPP bounds: 1.6's
# AuthorizationKey is 20 bytes written as 40 hex digits, 2.0.1's BasicAuthPassword at most
# 40 characters. 160 random bits.
OCPP_PASSWORD_BYTES = 20


def new_password(protocol: Protocol = Protocol.NATIVE) -> str:
    """A fresh device password: 43 URL-safe characters (256 random bits); for an OCPP charger
    40 hex digits (160 bits), the longest its Basic-auth password may be."""
    if protocol is Protocol.OCPP:
        return secrets.token_hex(OCPP_PASSWORD_BYTES)
    return secrets.token_urlsafe(PASSWORD_BYTES)


def credential_version(secret_hash: str) -> str:
    """A fingerprint of the stored hash: changes on every issue and rotation, reveals nothing.

    It is derived from the argon2 hash (itself salted), never from the password, so a broker
    can carry it in the clear (Mosquitto keeps it in the client's text name).
    """
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:16]


def may_connect(state: LifecycleState, revoked_at: dt.datetime | None) -> bool:
    """Whether a device in ``state`` with this credential may connect to the broker at all."""
    return revoked_at is None and state not in REFUSED_STATES
