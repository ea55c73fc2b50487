"""Private keys of the platform, sealed in the records (``PkiKey``): the CAs' keys, and the
signing keys other domains ask for by name (guest credentials, firmware releases).

A key is made on first use. Two processes making the same key at once both insert it under
its unique name in a savepoint; the loser rolls its savepoint back and takes the winner's,
read with a locking read (on InnoDB a plain read would still see its older snapshot).
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.pki import KeyEncryptionError, PkiError
from cloud.pki.kek import load_kek
from cloud.pki.models import PkiKey
from cloud.settings import Settings

ALGORITHM = "ec-p256"
KEY_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def signing_key(session: Session, settings: Settings, name: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key named ``name``, made and sealed on first use."""
    stored = _stored_or_created(session, settings, name)
    kek = load_kek(settings)
    der = kek.open(stored.name, stored.sealed, stored.kek_id)
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):  # pragma: no cover - we sealed it
        raise KeyEncryptionError(f"the PKI key {name!r} is not an EC key")
    return key


def public_key_der(session: Session, settings: Settings, name: str) -> bytes:
    """The public half of the key ``name`` (SubjectPublicKeyInfo DER), made on first use."""
    return _stored_or_created(session, settings, name).public_key


def _stored_or_created(session: Session, settings: Settings, name: str) -> PkiKey:
    if not KEY_NAME.fullmatch(name):
        raise PkiError(f"a PKI key name is 1-64 of a-z 0-9 . _ -, not {name!r}")
    stored = session.get(PkiKey, name)
    if stored is not None:
        return stored
    # The KEK file of the embedded mode is made with the first key, never later: a missing
    # KEK beside existing keys is an error to report, not a file to create.
    first = session.scalar(select(PkiKey.name).limit(1)) is None
    kek = load_kek(settings, create=first)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stored = PkiKey(
        name=name,
        algorithm=ALGORITHM,
        public_key=key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        sealed=kek.seal(name, der),
        kek_id=kek.id,
    )
    try:
        with session.begin_nested():
            session.add(stored)
    except IntegrityError:  # another process made it first: theirs is the key
        winner = session.get(PkiKey, name, with_for_update={"read": True}, populate_existing=True)
        if winner is None:  # pragma: no cover - keys are never deleted
            raise
        return winner
    record(session, None, "pki.key_create", "pki_key", name, None, {"algorithm": ALGORITHM})
    return stored
