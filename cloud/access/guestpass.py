"""Guest credentials: the platform-signed pass that lets a guest charge while the charger is
offline (docs/guest-credentials.md; the charger's side is ``firmware.core.guestpass``).

An accepted guest (a ``ChargerAccess`` guest row) asks for a credential for one charger; the
platform signs {charger, guest id, window, key id} with its guest-credential key (ECDSA P-256,
held sealed by ``cloud.pki.keystore`` under ``KEY_NAME``), records it (``GuestCredential``: the
guest id is the id tag the charger will report the session under, and names the user) and
audits it. The window is the guest's own, capped at ``guest_credential_max_days`` from now, and
never opens before now: a credential is a copy of a right, never more than the right.

The charger checks it with the public keys the factory wrote to its NVS (``nvs_record``); when
the session reaches the cloud (``cloud.charging.sessions``) its id tag finds the credential and
the user, and the cloud confirms the right as for a card (``may_charge``).

The pure functions (``make_credential``, ``point_of``, ``nvs_record_of``) take keys and values;
the others take the database session and the settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.access import AccessError
from cloud.access.models import GuestCredential
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.pki import keystore
from cloud.settings import Settings
from firmware.core import guestpass

KEY_NAME = "guest-credentials"
TAG_PREFIX = "gst-"
_TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class GuestCredentialError(AccessError):
    """No credential can be issued: ``reason`` says why in a word, the message in a sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotAGuestError(GuestCredentialError):
    """The caller is not a guest of this charger (an owner or a role needs no credential)."""


class OutsideWindowError(GuestCredentialError):
    """The guest's window has closed, or is too far ahead to issue for now."""


@dataclasses.dataclass(frozen=True)
class Issued:
    """A credential issued: the text to hand to the charger and what it says."""

    credential: str
    record: GuestCredential


# -- pure ---------------------------------------------------------------------------------------


def new_tag() -> str:
    """A guest id: ``gst-`` and 12 of [a-z0-9] (an id tag: at most 20, OCPP CiString20)."""
    return TAG_PREFIX + "".join(secrets.choice(_TAG_ALPHABET) for _ in range(12))


def point_of(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed SEC 1 point of a P-256 public key (what the charger holds)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("guest credentials are signed with P-256 keys")
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def key_id_of(key: ec.EllipticCurvePublicKey) -> str:
    """The key id a credential names its signing key by (``firmware.core.guestpass.key_id``)."""
    return str(guestpass.key_id(point_of(key)))


def nvs_record_of(keys: Iterable[ec.EllipticCurvePublicKey]) -> bytes:
    """The NVS record ``guest_keys`` holding these public keys."""
    return bytes(guestpass.nvs_record([point_of(key) for key in keys]))


def _seconds(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def make_credential(
    key: ec.EllipticCurvePrivateKey,
    charger_id: str,
    guest_id: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> str:
    """The credential text (format: ``firmware.core.guestpass``), signed with ``key``."""
    payload = {
        "v": guestpass.VERSION,
        "c": charger_id,
        "g": guest_id,
        "nb": _seconds(not_before),
        "na": _seconds(not_after),
        "k": key_id_of(key.public_key()),
    }
    head = guestpass.b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
    der = key.sign(head.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{head}.{guestpass.b64url_encode(signature)}"


# -- with the database ----------------------------------------------------------------------------


def platform_key(session: Session, settings: Settings) -> ec.EllipticCurvePrivateKey:
    """The platform's guest-credential signing key (made and sealed by the PKI on first use)."""
    return keystore.signing_key(session, settings, KEY_NAME)


def public_keys(session: Session, settings: Settings) -> list[ec.EllipticCurvePublicKey]:
    """The public keys a charger must hold to check the credentials the platform issues.

    One today; the format and the charger take several (a key id per credential), so that a
    new key can be put beside the old one before credentials are signed with it.
    """
    key = serialization.load_der_public_key(keystore.public_key_der(session, settings, KEY_NAME))
    if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - the PKI makes P-256
        raise TypeError("the guest-credential key is not an EC key")
    return [key]


def nvs_record(session: Session, settings: Settings) -> bytes:
    """The NVS blob ``guest_keys`` the factory writes to every charger (enrollment calls this;
    ``firmware.tools.nvs.DeviceNvs(guest_keys=...)`` takes it)."""
    return nvs_record_of(public_keys(session, settings))


def window_for(
    access: ChargerAccess | None, now: dt.datetime, max_days: int
) -> tuple[dt.datetime, dt.datetime]:
    """The window of a credential for ``access`` asked at ``now``: the guest's window, opened
    no earlier than now, closed no later than ``max_days`` from now. Raises when there is none."""
    if access is None or access.level is not AccessLevel.GUEST:
        raise NotAGuestError(
            "not_a_guest", "only a guest of this charger gets a guest credential for it"
        )
    cap = now + dt.timedelta(days=max_days)
    start = now if access.valid_from is None else max(now, _aware(access.valid_from))
    end = cap if access.valid_until is None else min(cap, _aware(access.valid_until))
    if end <= now:
        raise OutsideWindowError("window_closed", "the guest's window on this charger has closed")
    if start >= end:
        raise OutsideWindowError(
            "window_ahead",
            f"the guest's window opens more than {max_days} days from now: ask again closer",
        )
    return start.replace(microsecond=0), end.replace(microsecond=0)


def _aware(moment: dt.datetime) -> dt.datetime:
    """Stored datetimes are UTC, naive on some backends."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def issue(
    session: Session,
    device: Device,
    user_id: int,
    key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    max_days: int,
) -> Issued:
    """Issue a credential to the guest ``user_id`` of ``device``, recorded in the caller's
    transaction (the caller audits and commits)."""
    access = session.scalar(
        select(ChargerAccess).where(
            ChargerAccess.device_id == device.id, ChargerAccess.user_id == user_id
        )
    )
    not_before, not_after = window_for(access, now, max_days)
    tag = new_tag()
    credential = make_credential(key, device.id, tag, not_before, not_after)
    row = GuestCredential(
        id=tag,
        device_id=device.id,
        user_id=user_id,
        key_id=key_id_of(key.public_key()),
        not_before=not_before,
        not_after=not_after,
        issued_at=now,
    )
    session.add(row)
    session.flush()
    return Issued(credential, row)


def find(session: Session, device_id: str, tag: str) -> GuestCredential | None:
    """The credential a charger reported a session under (its id tag), on that charger."""
    if not tag.startswith(TAG_PREFIX):
        return None
    row = session.get(GuestCredential, tag)
    return row if row is not None and row.device_id == device_id else None


def is_guest_tag(tag: str | None) -> bool:
    """True for an id tag a guest credential made."""
    return tag is not None and tag.startswith(TAG_PREFIX)
