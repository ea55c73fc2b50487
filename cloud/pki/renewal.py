"""Certificate renewal over the device contract (docs/device-contract.md 4.10): a device asks on
``af/{id}/cert/request`` for a certificate for a new key (a CSR) or for the key it holds
(``recertify``), and gets the certificate, or the reason of a refusal, on ``af/{id}/cert``.

``answer`` is the decision, in the caller's session (the caller commits, then publishes):

* refused, nothing written: a device unknown or decommissioned, one that holds no certificate
  in force (an expired or revoked device goes back to the factory, not through here), a CSR
  the PKI refuses (``cloud.pki.csr``: signature, key, CN = the device id, no CA rights), a new
  key asked for before the certificate in force enters the renewal window
  (``AMPFLEET_PKI_RENEW_BEFORE_DAYS``);
* a key that already has a certificate in force outside the window gets that certificate
  again: the answer to an earlier request was lost, and the device asks again (after its next
  connection); nothing is issued twice, so a device gets at most one certificate per window;
* otherwise the PKI issues (``service.issue_for_device``) or re-certifies
  (``service.recertify``) and records it, audited in the same transaction.

The device row is locked for the decision (``SELECT ... FOR UPDATE`` on MariaDB; SQLite writes
one at a time anyway): two requests of one device, on two workers, are decided one after the
other, and the second sees the first's certificate.

``RenewalWorker`` follows ``af/+/cert/request`` (shared as ``$share/certs/...`` where the broker
can split it) on its own connection, in the charging worker's process beside the CRL keeper
(``ampfleet worker charging``). Requests are decided one at a time on a thread of their own (the
link's thread only queues them); a device that asks more often than every ``min_interval``
seconds is dropped and counted; a malformed request is counted, kept in
``<data_dir>/rejected.jsonl`` and answered with its reason; the worker goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from pathlib import Path

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cloud.db import Database, utcnow
from cloud.devicelink import metrics
from cloud.devicelink.endpoint import Endpoint, shared
from cloud.devicelink.errors import LinkError
from cloud.devicelink.inbox import Inbox
from cloud.devicelink.rejects import Rejected, RejectLog
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink
from cloud.devices.models import Device, LifecycleState
from cloud.pki import CsrRejectedError, PkiError, csr, issuance, service
from cloud.pki.models import CertificateState, DeviceCertificate
from cloud.settings import Settings
from firmware.core import contract

log = logging.getLogger(__name__)

GROUP = "certs"
DEFAULT_MIN_INTERVAL = 10.0  # seconds between two requests of one device that are looked at
_THROTTLE_KEEP = 10_000  # devices remembered by the throttle before it forgets the old ones

RENEWALS = Counter(
    "ampfleet_certificate_renewals_total",
    "Certificate requests over the device contract, by outcome (issued, recertified, resent, "
    "refused, malformed, throttled, failed).",
    ["outcome"],
)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What to publish on ``af/{id}/cert`` and what happened: ``issued``, ``recertified``,
    ``resent`` or ``refused`` (``serial`` of the certificate sent, if one)."""

    payload: bytes
    outcome: str
    serial: str | None = None


def ms(moment: dt.datetime) -> int:
    """A datetime as contract time (ms since the epoch); naive ones are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def refusal(reason: str) -> Answer:
    """A refusal, its reason cut to the contract's 256 characters."""
    if len(reason) > contract.MAX_STRING:
        reason = reason[: contract.MAX_STRING - 3] + "..."
    return Answer(contract.encode_cert_error(reason), "refused")


def answer(
    session: Session,
    settings: Settings,
    device_id: str,
    request: contract.CertRequest,
    now: dt.datetime | None = None,
) -> Answer:
    """Decide one request of ``device_id`` (see the module docstring); the caller commits before
    it publishes the answer."""
    now = now or utcnow()
    device = session.get(Device, device_id, with_for_update=True)
    if device is None:
        return refusal("no such device in the registry")
    if device.state is LifecycleState.DECOMMISSIONED:
        return refusal("the device is decommissioned: it gets no certificate")
    current = service.current_certificate(session, device_id)
    if current is None:
        return refusal(
            "the device holds no certificate in force (expired or revoked): renewal needs one; "
            "enroll it again"
        )
    window = dt.timedelta(days=settings.pki_renew_before_days)
    due = _aware(current.not_after) - now <= window
    if request.recertify:
        if not due:
            return _resend(session, settings, current)
        issued = service.recertify(session, settings, device_id, actor=None)
        return _sent(issued, "recertified")
    try:
        parsed = csr.accept(request.csr or "", device_id)
    except CsrRejectedError as exc:
        return refusal(exc.reason)
    held = _in_force_for_key(
        session, device_id, issuance.public_key_sha256(parsed.public_key()), now
    )
    if held is not None and _aware(held.not_after) - now > window:
        return _resend(session, settings, held)
    if not due:
        opens = _aware(current.not_after) - window
        return refusal(
            f"not due: the certificate in force ({current.serial}) expires "
            f"{_aware(current.not_after).isoformat()}; renewal opens {opens.isoformat()}"
        )
    issued = service.issue_for_device(session, settings, device_id, request.csr or "", actor=None)
    return _sent(issued, "issued")


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _in_force_for_key(
    session: Session, device_id: str, key_sha256: str, now: dt.datetime
) -> DeviceCertificate | None:
    """The newest certificate in force of ``device_id`` for the public key ``key_sha256``."""
    return session.scalar(
        select(DeviceCertificate)
        .where(
            DeviceCertificate.device_id == device_id,
            DeviceCertificate.public_key_sha256 == key_sha256,
            DeviceCertificate.state == CertificateState.ISSUED,
            DeviceCertificate.not_before <= now,
            DeviceCertificate.not_after > now,
        )
        .order_by(DeviceCertificate.not_after.desc(), DeviceCertificate.id.desc())
        .limit(1)
    )


def _resend(session: Session, settings: Settings, held: DeviceCertificate) -> Answer:
    chain = held.certificate_pem + service.ca_chain_pem(session, settings)
    payload = contract.encode_cert(
        held.certificate_pem, chain, held.serial, ms(_aware(held.not_after))
    )
    return Answer(payload, "resent", held.serial)


def _sent(issued: service.Issued, outcome: str) -> Answer:
    payload = contract.encode_cert(
        issued.certificate_pem, issued.chain_pem, issued.serial, ms(issued.not_after)
    )
    return Answer(payload, outcome, issued.serial)


class RenewalWorker:
    """Answers devices' certificate requests (``af/+/cert/request``)."""

    def __init__(
        self,
        database: Database,
        endpoint: Endpoint,
        client_id: str,
        data_dir: Path,
        shared_subscriptions: bool,
        *,
        settings: Settings,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        max_payload_bytes: int = contract.MAX_PAYLOAD_BYTES,
        publish_timeout: float = 10.0,
    ) -> None:
        self.database = database
        self.settings = settings
        self.min_interval = min_interval
        self.max_payload_bytes = max_payload_bytes
        self.publish_timeout = publish_timeout
        self.rejects = RejectLog(data_dir / "rejected.jsonl")
        topic = shared(contract.topic_filter(contract.CERT_REQUEST), GROUP, shared_subscriptions)
        # A persistent session: requests made while the worker restarts are queued for it.
        self.connection = ThreadedLink(endpoint, client_id, clean_session=False)
        self.connection.subscribe(topic, self._on_message)
        self.outcomes: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._inbox = Inbox(self._stop)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect and answer requests in the background."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pki-renewal", daemon=True)
        self._thread.start()
        self.connection.start()

    def stop(self) -> None:
        """Stop answering and disconnect."""
        self._stop.set()
        self._inbox.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.connection.stop()
        self.rejects.close()

    def _on_message(self, message: Message) -> None:
        # The link's thread: hand over and return (signing and the database take their time).
        self._inbox.put(message)

    def _loop(self) -> None:
        while not self._stop.is_set():
            message = self._inbox.get()
            if message is None:
                return
            try:
                self.handle(message.topic, message.payload)
            except Exception:  # a bug must not stop the worker
                log.exception("certificate request on %s failed", message.topic)
                why = Rejected("error", None, "the worker failed on it, see its log")
                self.rejects.reject(contract.CERT_REQUEST, message.topic, message.payload, why)
                self._count("failed")

    def handle(self, topic: str, payload: bytes, now: dt.datetime | None = None) -> str:
        """Answer one request; the outcome (``issued``, ``recertified``, ``resent``,
        ``refused``, ``malformed``, ``throttled`` or ``failed``)."""
        metrics.RECEIVED.labels(contract.CERT_REQUEST).inc()
        try:
            device_id, channel = contract.parse_topic(topic)
            if channel != contract.CERT_REQUEST:
                raise contract.ContractError("bad_topic", None, f"not cert/request: {channel}")
        except contract.ContractError as exc:
            self.rejects.reject(
                contract.CERT_REQUEST, topic, payload, Rejected(exc.reason, exc.field, str(exc))
            )
            return self._count("malformed")
        if self._throttled(device_id):
            log.info("certificate request of %s dropped: asked again too soon", device_id)
            return self._count("throttled")
        try:
            request = contract.decode_cert_request(payload, None, self.max_payload_bytes)
        except contract.ContractError as exc:
            self.rejects.reject(
                contract.CERT_REQUEST, topic, payload, Rejected(exc.reason, exc.field, str(exc))
            )
            self._count("malformed")
            self._publish(device_id, refusal(f"the request breaks the contract: {exc}"))
            return "malformed"
        try:
            with self.database.transaction() as session:
                decided = answer(session, self.settings, device_id, request, now)
        except PkiError as exc:  # no KEK, another KEK, the CAs unusable: the operator's to fix
            log.error("certificate request of %s cannot be served: %s", device_id, exc)
            decided = refusal("the platform cannot sign certificates right now")
        except DBAPIError as exc:  # the device asks again after its next connection
            log.warning("certificate request of %s: database error: %s", device_id, exc)
            return self._count("failed")
        if decided.outcome == "refused":
            log.info("certificate request of %s refused: %s", device_id, decided.payload[:300])
        else:
            log.info("certificate %s for %s (%s)", decided.serial, device_id, decided.outcome)
        self._count(decided.outcome)
        self._publish(device_id, decided)
        return decided.outcome

    def _publish(self, device_id: str, decided: Answer) -> None:
        # QoS 1, not retained (contract 4.10); lost, the device asks again and is answered the
        # same (``resent``).
        topic = contract.topic(device_id, contract.CERT)
        try:
            self.connection.publish(topic, decided.payload, 1, False, self.publish_timeout)
        except LinkError as exc:
            log.warning("answer to %s not sent: %s", device_id, exc)

    def _throttled(self, device_id: str) -> bool:
        """True when ``device_id`` asked less than ``min_interval`` seconds ago."""
        if self.min_interval <= 0:
            return False
        now = time.monotonic()
        last = self._last_seen.get(device_id)
        if last is not None and now - last < self.min_interval:
            return True
        if len(self._last_seen) >= _THROTTLE_KEEP:
            horizon = now - self.min_interval
            self._last_seen = {d: t for d, t in self._last_seen.items() if t >= horizon}
        self._last_seen[device_id] = now
        return False

    def _count(self, outcome: str) -> str:
        RENEWALS.labels(outcome).inc()
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        return outcome
