"""Devices that authenticate with a certificate of the platform's PKI, as the embedded broker
sees them: who may connect, who must go, and who is in quarantine.

By the time a CONNECT reaches ``CertificateRegistry.authenticate``, TLS has verified the
certificate against the PKI's CA chain, its validity and the CRL (broker.mtls). What the
handshake cannot know is asked of the records here:

* the certificate is one the platform issued and recorded, not revoked since the CRL the
  broker holds, in its validity, and its CN names a device that may connect (not suspended,
  decommissioned or deleted);
* the CONNECT's client id is that CN: device id = client id = certificate CN. The username
  and password are not looked at.

A device's certificates in force are all the ones not revoked and not expired: after a
renewal the old one stays usable until it expires or is revoked (``superseded``), so that a
device is not cut off between receiving its new certificate and reconnecting with it
(docs/pki.md, "Re-certification").

``stale`` is the watchdog's question for the certificate sessions (revoked, expired, device
refused), ``quarantined`` its question for every device session, password or certificate.

Everything here is blocking (database): the broker calls it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable

from cryptography import x509
from sqlalchemy import or_, select

from broker.registry import Decision, Identity
from cloud.db import Database, utcnow
from cloud.devices.credentials import may_connect
from cloud.devices.models import Device
from cloud.pki import CertificateRefusedError, service
from cloud.pki.models import CertificateState, DeviceCertificate
from cloud.settings import Settings

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) query


@dataclasses.dataclass(frozen=True)
class CertificateIdentity(Identity):
    """A device session authenticated by its certificate (``serial``, lower-case hex)."""

    serial: str = ""


class CertificateRegistry:
    """CONNECT decisions and re-checks for the devices of the mutual-TLS listener."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    def authenticate(self, certificate_der: bytes, client_id: str | None) -> Decision:
        """Decide a CONNECT on the mutual-TLS listener. Never raises for bad input."""
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
        except ValueError:
            return Decision(None, "the client certificate cannot be read")
        device_id = service.common_name(certificate)
        if device_id is None:
            return Decision(None, "the client certificate has no single CN")
        if client_id != device_id:
            # Device id = client id = certificate CN: one device cannot take another's session.
            return Decision(None, f"client id {client_id!r} is not the certificate's CN")
        with self.database.session() as session:
            try:
                stored = service.check_presented(session, self.settings, certificate, device_id)
            except CertificateRefusedError as exc:
                return Decision(None, exc.reason)
            state = session.scalar(select(Device.state).where(Device.id == device_id))
        if state is None:
            return Decision(None, f"no device {device_id}")
        if not may_connect(state, None):
            return Decision(None, f"device is {state.value}")
        identity = CertificateIdentity(device_id, is_service=False, serial=stored.serial)
        return Decision(identity, f"certificate {stored.serial}")

    def stale(self, grants: dict[str, CertificateIdentity]) -> list[str]:
        """Client ids (of ``grants``: client id -> identity at CONNECT) that must go now: the
        certificate was revoked or has expired, or the device may no longer connect."""
        now = utcnow()
        in_force: set[tuple[str, str]] = set()
        serials = sorted({grant.serial for grant in grants.values()})
        for chunk in _chunks(serials):
            stmt = (
                select(DeviceCertificate.serial, DeviceCertificate.device_id, Device.state)
                .join(Device, Device.id == DeviceCertificate.device_id)
                .where(
                    DeviceCertificate.serial.in_(chunk),
                    DeviceCertificate.state == CertificateState.ISSUED,
                    DeviceCertificate.not_after > now,
                )
            )
            with self.database.session() as session:
                for serial, device_id, state in session.execute(stmt):
                    if may_connect(state, None):
                        in_force.add((serial, device_id))
        return sorted(
            client_id
            for client_id, grant in grants.items()
            if (grant.serial, grant.username) not in in_force
        )


def quarantined(database: Database, device_ids: Collection[str]) -> set[str]:
    """The devices of ``device_ids`` in quarantine: a quarantine reason is set, or the device
    was never approved (cloud.devices.quarantine; the status worker quarantines those when
    they connect, the broker does not wait for it)."""
    found: set[str] = set()
    for chunk in _chunks(sorted(device_ids)):
        stmt = select(Device.id).where(
            Device.id.in_(chunk),
            or_(Device.quarantine_reason.is_not(None), Device.approved_at.is_(None)),
        )
        with database.session() as session:
            found.update(session.scalars(stmt))
    return found


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
