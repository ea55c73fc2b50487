"""Guest credentials: a platform-signed pass a charger checks offline (docs/guest-credentials.md).

An accepted guest gets from the cloud a credential for one charger and one window; shown to
the charger (by the app, over whatever local channel the board offers), it starts a session
even while the charger has no cloud link. The charger checks it with the platform's public
keys, written to its NVS at the factory (``guest_keys``); it needs no secret and no clock more
exact than ``SKEW_MS``.

Format (compact, URL- and QR-safe ASCII)::

    credential = B64URL(payload) "." B64URL(signature)
    payload    = UTF-8 JSON object:
                   "v"  1                 format version
                   "c"  charger id        the device id it is good for (contract 1)
                   "g"  guest id          the id tag the session is reported under (contract 14)
                   "nb" not before        Unix seconds, UTC
                   "na" not after         Unix seconds, UTC (exclusive)
                   "k"  key id            which of the platform's keys signed it
    signature  = ECDSA P-256 / SHA-256 over the ASCII bytes of B64URL(payload), 64 bytes r || s

B64URL is base64url without padding (RFC 4648 5). Signing the encoded payload, as JWS does,
means nobody has to re-serialise JSON the same way to check it. The key id is the first 8
base64url characters of SHA-256 of the 65-byte public point, so the platform can rotate keys:
the charger holds several (``keys_from_nvs``) and picks by id.

NVS (``guest_keys``, a blob): JSON ``{"<key id>": "<B64URL of the 65-byte point 04||X||Y>"}``.

``Verifier.check(credential, now_ms)`` returns ``(guest id, None)``, or a reason from
``REASONS`` with the guest id once the signature held; it never raises for what a stranger can
type.
"""

import binascii
import hashlib
import json

from firmware.core import p256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
NVS_KEY = "guest_keys"
# A charger's clock (SNTP, or the RTC kept across a reboot) may be off a little; a credential is
# honoured this much before its window and after it. Five minutes: a guest at the charger does
# not notice, and nobody gains a useful session from it.
SKEW_MS = 300000
MAX_CREDENTIAL = 1024  # characters: a credential is about 300; anything longer is not one
MAX_GUEST_ID = 20  # OCPP CiString20, what an id tag may be (contract 14)

# Reasons, in the words of ``authorization.refused`` (docs/device-contract.md 14).
MALFORMED = "malformed"  # not a credential: bad shape, bad encoding, fields missing
UNKNOWN_KEY = "unknown_key"  # signed by a key this charger does not hold
BAD_SIGNATURE = "bad_signature"  # tampered with, or not signed by the platform
OTHER_CHARGER = "other_charger"  # good, but for another charger
NOT_YET_VALID = "not_yet_valid"  # its window has not opened
EXPIRED = "expired"  # its window has closed
NO_CLOCK = "no_clock"  # the charger does not know the time: no window can be checked
REASONS = (MALFORMED, UNKNOWN_KEY, BAD_SIGNATURE, OTHER_CHARGER, NOT_YET_VALID, EXPIRED, NO_CLOCK)


def b64url_decode(text: "str | bytes") -> bytes:
    """Bytes of unpadded base64url ``text`` (str or bytes); ValueError when it is not."""
    chars = text.decode() if type(text) is bytes else str(text)
    if len(chars) % 4 == 1:
        raise ValueError("bad base64url length")
    for char in chars:
        if not ("A" <= char <= "Z" or "a" <= char <= "z" or "0" <= char <= "9" or char in "-_"):
            raise ValueError("not base64url")
    chars = chars.replace("-", "+").replace("_", "/") + "=" * (-len(chars) % 4)
    try:
        return binascii.a2b_base64(chars)
    except Exception as exc:  # binascii.Error on CPython, ValueError on MicroPython
        raise ValueError("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url text of ``data``."""
    text = binascii.b2a_base64(data).decode().strip()
    return text.replace("+", "-").replace("/", "_").rstrip("=")


def key_id(point: bytes) -> str:
    """The key id of a 65-byte public point: 8 base64url characters of its SHA-256."""
    return b64url_encode(hashlib.sha256(point).digest())[:8]


def keys_from_nvs(data: "bytes | None") -> "dict[str, Any]":
    """{key id: public key} from the NVS record (``NVS_KEY``); entries that do not decode, or
    whose id is not their point's, are left out; no record, no keys."""
    keys = {}  # type: dict[str, Any]
    if not data:
        return keys
    try:
        entries = json.loads(data)
    except ValueError:
        return keys
    if type(entries) is not dict:
        return keys
    for kid in entries:
        encoded = entries[kid]
        if type(encoded) is not str:
            continue
        try:
            point = b64url_decode(encoded)
            if key_id(point) != kid:
                continue
            keys[kid] = p256.public_key(point)
        except ValueError:
            continue
    return keys


def nvs_record(points: "list[bytes]") -> bytes:
    """The NVS record holding the public ``points`` (65-byte uncompressed each)."""
    entries = {}
    for point in points:
        p256.public_key(point)  # refuse a bad point here, not at the charger
        entries[key_id(point)] = b64url_encode(point)
    return json.dumps(entries).encode()


def _int(value: object) -> bool:
    return type(value) is int


def parse(credential: object) -> "tuple[dict[str, Any], bytes, bytes]":
    """(payload dict, signed bytes, signature bytes) of a credential; ValueError when it is not
    well formed (the signature is not checked here)."""
    if type(credential) is bytes:
        try:
            credential = credential.decode()
        except UnicodeError as exc:
            raise ValueError("not text") from exc
    if type(credential) is not str or not 0 < len(credential) <= MAX_CREDENTIAL:
        raise ValueError("not a credential")
    credential = credential.strip()
    dot = credential.find(".")
    if dot <= 0 or credential.find(".", dot + 1) != -1:
        raise ValueError("not two parts")
    head, tail = credential[:dot], credential[dot + 1 :]
    signature = b64url_decode(tail)
    if len(signature) != p256.SIGNATURE_BYTES:
        raise ValueError("bad signature length")
    try:
        payload = json.loads(b64url_decode(head))
    except ValueError as exc:
        raise ValueError("payload is not JSON") from exc
    if type(payload) is not dict or payload.get("v") != VERSION:
        raise ValueError("not a version 1 payload")
    for name in ("c", "g", "k"):
        if type(payload.get(name)) is not str or not payload[name]:
            raise ValueError("missing " + name)
    if len(payload["g"]) > MAX_GUEST_ID:
        raise ValueError("guest id too long")
    if not (_int(payload.get("nb")) and _int(payload.get("na"))):
        raise ValueError("missing window")
    if payload["na"] <= payload["nb"]:
        raise ValueError("empty window")
    return payload, head.encode(), signature


class Verifier:
    """Checks credentials for one charger against the platform keys it holds."""

    __slots__ = ("charger_id", "keys", "skew_ms")

    def __init__(self, charger_id: str, keys: "dict[str, Any]", skew_ms: int = SKEW_MS) -> None:
        """``keys``: {key id: public key} (``keys_from_nvs``)."""
        self.charger_id = charger_id
        self.keys = keys
        self.skew_ms = skew_ms

    def check(self, credential: object, now_ms: "int | None") -> "tuple[str | None, str | None]":
        """(guest id, None) when ``credential`` lets a guest charge here at ``now_ms`` (Unix
        ms; None when the clock is not set), else (guest id, reason): the guest id only once
        the signature holds (None before: an unsigned claim names nobody)."""
        try:
            payload, signed, signature = parse(credential)
        except (ValueError, TypeError, KeyError, IndexError, RuntimeError):
            # (RuntimeError: MicroPython's json on pathological nesting.)
            return None, MALFORMED
        key = self.keys.get(payload["k"])
        if key is None:
            return None, UNKNOWN_KEY
        # The signature before anything else the payload says: an unsigned payload's claims
        # (its charger, its window) are not worth an answer.
        if not p256.verify(key, signed, signature):
            return None, BAD_SIGNATURE
        guest = payload["g"]
        if payload["c"] != self.charger_id:
            return guest, OTHER_CHARGER
        if now_ms is None:
            return guest, NO_CLOCK
        if now_ms + self.skew_ms < payload["nb"] * 1000:
            return guest, NOT_YET_VALID
        if now_ms - self.skew_ms >= payload["na"] * 1000:
            return guest, EXPIRED
        return guest, None
