"""The device CA's certificate revocation list: stored in the records (``PkiCrl``), served
over HTTP, and written to the files Mosquitto reads (``crlfile``, and the CA chain as
``cafile``).

A new CRL (number + 1, RFC 5280 5.2.3) is issued on every revocation, in the revocation's
transaction, and once half of its validity (``pki_crl_days``) has passed. The row is replaced
under a row lock, so numbers only grow whichever process issues. The files are written once
the transaction has committed (never a CRL the records then roll back), atomically (a temporary
file renamed over the old one: Mosquitto never reads half a file).

``CrlKeeper`` is what keeps the CRL from expiring while nobody revokes anything: the charging
worker runs one (``ampfleet worker charging``); every ``pki_crl_check_interval`` seconds it
issues a new CRL when one is due, and rewrites the files when another process (an API on
another host) changed the CRL. ``ampfleet pki crl`` does the same once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from cloud.db import Database, utcnow
from cloud.pki import authorities, issuance
from cloud.pki.models import CertificateState, DeviceCertificate, PkiCrl
from cloud.settings import Settings

log = logging.getLogger(__name__)

# Revoked certificates stay listed this long past their expiry (a device's clock may lag).
LISTED_AFTER_EXPIRY = dt.timedelta(days=1)
_PENDING = "ampfleet.pki.files"


def pem_of(der: bytes) -> bytes:
    """A CRL's DER as PEM."""
    crl = x509.load_der_x509_crl(der)
    return crl.public_bytes(serialization.Encoding.PEM)


def stored(session: Session, lock: bool = False) -> PkiCrl | None:
    """The device CA's current CRL row (locked for update when ``lock``), None before the
    authorities exist."""
    return session.get(
        PkiCrl, authorities.DEVICES, with_for_update=lock or None, populate_existing=lock
    )


def current(session: Session, settings: Settings, now: dt.datetime | None = None) -> PkiCrl:
    """The current CRL, made with the authorities on first use and renewed when due."""
    authorities.ensure(session, settings)
    row = stored(session)
    assert row is not None  # made with the device CA
    if is_due(row, now or utcnow()):
        row = regenerate(session, settings, now)
    return row


def is_due(row: PkiCrl, now: dt.datetime) -> bool:
    """True once half of the CRL's validity has passed."""
    return now >= row.this_update + (row.next_update - row.this_update) / 2


def regenerate(session: Session, settings: Settings, now: dt.datetime | None = None) -> PkiCrl:
    """Issue the next CRL (number + 1) listing every revoked certificate not long expired;
    the files follow when the transaction commits."""
    found = authorities.ensure(session, settings)
    row = stored(session, lock=True)
    assert row is not None
    now = now or utcnow()
    revoked = session.execute(
        select(
            DeviceCertificate.serial,
            DeviceCertificate.revoked_at,
            DeviceCertificate.revocation_reason,
        )
        .where(
            DeviceCertificate.state == CertificateState.REVOKED,
            DeviceCertificate.authority == authorities.DEVICES,
            DeviceCertificate.not_after > now - LISTED_AFTER_EXPIRY,
        )
        .order_by(DeviceCertificate.id)
    )
    crl = issuance.certificate_revocation_list(
        found.devices.certificate,
        found.devices.key(session, settings),
        row.number + 1,
        now,
        dt.timedelta(days=settings.pki_crl_days),
        [issuance.Revoked(int(serial, 16), at or now, reason) for serial, at, reason in revoked],
    )
    row.number += 1
    row.this_update = crl.last_update_utc
    row.next_update = issuance.next_update_of(crl)
    row.crl_der = crl.public_bytes(issuance.DER)
    session.flush()
    write_after_commit(session, settings, row.crl_der, found.chain_pem)
    return row


def refresh_if_due(session: Session, settings: Settings, now: dt.datetime | None = None) -> bool:
    """Issue a new CRL when half of the current one has passed; nothing before the PKI
    exists. True when one was issued."""
    row = stored(session)
    if row is None or not is_due(row, now or utcnow()):
        return False
    regenerate(session, settings, now)
    return True


# -- files ------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one rename: a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)  # public data: the broker's user reads it
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_files(settings: Settings, crl_der: bytes, chain_pem: str) -> None:
    """Write the CRL (PEM) to ``pki_crl_file`` and the CA chain to ``pki_ca_file``."""
    write_atomically(Path(settings.pki_crl_file), pem_of(crl_der))
    write_atomically(Path(settings.pki_ca_file), chain_pem.encode())


def write_current(session: Session, settings: Settings) -> int | None:
    """Write the files from the records now; the CRL number written, None before the PKI
    exists."""
    row = stored(session)
    found = authorities.existing(session)
    if row is None or found is None:
        return None
    write_files(settings, row.crl_der, found.chain_pem)
    return row.number


def write_after_commit(session: Session, settings: Settings, crl_der: bytes, chain: str) -> None:
    """Write the files once ``session`` commits (the latest CRL of the transaction wins);
    forgotten if it rolls back."""
    if _PENDING not in session.info:
        event.listen(session, "after_commit", _flush_pending)
        event.listen(session, "after_rollback", _drop_pending)
    session.info[_PENDING] = (settings, crl_der, chain)


def _flush_pending(session: Session) -> None:
    pending = session.info.get(_PENDING)
    session.info[_PENDING] = None
    if pending is None:
        return
    settings, crl_der, chain = pending
    try:
        write_files(settings, crl_der, chain)
    except OSError:  # the revocation stands in the records; the CRL keeper writes it again
        log.exception("writing the CRL to %s failed", settings.pki_crl_file)


def _drop_pending(session: Session) -> None:
    session.info[_PENDING] = None


class CrlKeeper:
    """A thread that keeps the CRL current and its files in step with the records."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.interval = settings.pki_crl_check_interval
        self.written: int | None = None  # the CRL number last written by this process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self, now: dt.datetime | None = None) -> None:
        """One round: renew the CRL when due, write the files when they are behind."""
        with self.database.transaction() as session:
            row = stored(session)
            if row is None:
                return  # no PKI yet: nothing to keep
            if is_due(row, now or utcnow()):
                regenerate(session, self.settings, now)
                log.info("issued CRL number %s", row.number)
        files_there = Path(self.settings.pki_crl_file).exists()
        if self.written != row.number or not files_there:
            with self.database.transaction() as session:
                self.written = write_current(session, self.settings)

    def start(self) -> None:
        """Check at once, then every ``interval`` seconds, in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pki-crl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # the next round retries; a dead thread never would
                log.exception("keeping the CRL current failed")
            if self._stop.wait(self.interval):
                return
