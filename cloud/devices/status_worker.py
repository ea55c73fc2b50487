"""``ampfleet worker status``: who is online, from the retained status topic and last wills.

A status under an id the registry does not know may be a gateway's: the OCPP bridge's will
names the bridge, not its chargers (``cloud.ocpp.bridges``). ``gateways`` (given by the entry
point: this layer does not know the bridge) applies it and says whether it was one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.db import Database, utcnow
from cloud.devicelink.endpoint import Endpoint, shared
from cloud.devicelink.metrics import RECEIVED
from cloud.devicelink.rejects import Rejected, RejectLog
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink
from cloud.devices import hardware, quarantine
from cloud.devices.models import Device, DeviceStatus, LifecycleState
from cloud.devices.status import (
    DEVICES_ONLINE,
    DEVICES_QUARANTINED,
    StatusDecoder,
    StatusUpdate,
)
from firmware.core import contract

log = logging.getLogger(__name__)
QUARANTINE_COUNT_EVERY = 30.0  # seconds between counts of the quarantined devices

#: Applies a status of a gateway (the session, its id, online?): None when the id is no
#: gateway's, else the devices whose status it changed.
Gateways = Callable[[Session, str, bool], "list[str] | None"]


# A device that connects for the first time is in service: the registry follows it. A suspended
# or decommissioned device stays so (the cloud refused it on purpose), whatever it announces.
ACTIVATED_BY_CONNECT = frozenset(
    {LifecycleState.MANUFACTURED, LifecycleState.PROVISIONED, LifecycleState.RELEASED}
)

NOT_APPROVED = "not approved: not on an approved production whitelist"


class AuditTrail(Protocol):
    """Records a change the worker made to a device, in the session of the change.

    Injected (``cloud.audit.service.system_recorder``) because the audit domain sits above this
    one: the registry does not import who audits it.
    """

    def __call__(
        self, session: Session, action: str, device: Device, details: dict[str, Any], /
    ) -> None: ...


class StatusWorker:
    """Keeps ``device_status`` equal to what devices announce."""

    def __init__(
        self,
        database: Database,
        endpoint: Endpoint,
        client_id: str,
        data_dir: Path,
        shared_subscriptions: bool,
        max_payload_bytes: int = 16384,
        max_skew_ms: int = 300_000,
        gateways: Gateways | None = None,
        audit: AuditTrail | None = None,
        on_quarantine: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.gateways = gateways
        self.audit = audit
        # Told the id of each device this worker quarantined, once that is committed: the
        # broker narrows its rights at once (broker.registry.refresher; the embedded broker
        # re-checks by itself). Injected: the registry domain does not import the broker.
        self.on_quarantine = on_quarantine
        self._quarantined: list[str] = []
        self.decoder = StatusDecoder(max_payload_bytes, max_skew_ms)
        self.rejects = RejectLog(data_dir / "rejected.jsonl")
        topic = shared(contract.topic("+", contract.STATUS), "status", shared_subscriptions)
        # A persistent session: status changes while the worker restarts are queued for it.
        self.connection = ThreadedLink(endpoint, client_id, clean_session=False)
        self.connection.subscribe(topic, self._on_message)
        self.updates = 0
        self._lock = threading.Lock()
        self._quarantine_counted = -QUARANTINE_COUNT_EVERY

    def start(self) -> None:
        """Connect and follow status messages."""
        self._refresh_gauge()
        self.connection.start()

    def stop(self) -> None:
        """Disconnect."""
        self.connection.stop()
        self.rejects.close()

    def _on_message(self, message: Message) -> None:
        RECEIVED.labels(contract.STATUS).inc()
        if not message.payload:
            return  # a retained status being cleared: nothing to record
        payload = message.payload
        result = self.decoder.status(message.topic, payload, int(time.time() * 1000))
        if isinstance(result, Rejected):
            self.rejects.reject(contract.STATUS, message.topic, payload, result)
            return
        self.apply(result)

    def apply(self, update: StatusUpdate) -> None:
        """Record one status update (unknown devices are counted and ignored)."""
        if self._record(update):
            self._refresh_gauge()
        with self._lock:
            quarantined, self._quarantined = self._quarantined, []
        for device_id in quarantined:
            if self.on_quarantine is None:
                continue
            try:
                self.on_quarantine(device_id)
            except Exception:  # the quarantine stands in the records; a resync applies it
                log.exception("the broker was not told that %s is quarantined", device_id)

    def _record(self, update: StatusUpdate) -> bool:
        now = utcnow()
        with self._lock, self.database.transaction() as session:
            device = session.get(Device, update.device_id)
            if device is None:
                marked = self._gateway(session, update)
                if marked is None:
                    why = Rejected("unknown_device", None, "no such device in the registry")
                    self.rejects.reject(contract.STATUS, update.device_id, b"", why)
                    return False
                if marked:
                    log.warning(
                        "gateway %s went offline: %d of its devices marked offline",
                        update.device_id,
                        len(marked),
                    )
                self.updates += 1
                return True
            status = session.get(DeviceStatus, update.device_id)
            if status is None:
                status = DeviceStatus(device_id=update.device_id, online=not update.online)
                session.add(status)
            if status.online != update.online:
                status.online = update.online
                status.changed_at = now
            status.last_seen_at = now
            if update.firmware_version:
                status.reported_firmware = update.firmware_version
            if update.schema:
                status.reported_schema = update.schema
            if update.hardware is not None:
                status.reported_hardware = update.hardware
            if update.online:
                self._check_trust(session, device, update)
            self._follow(session, device, update)
            self.updates += 1
        return True

    def _gateway(self, session: Session, update: StatusUpdate) -> list[str] | None:
        if self.gateways is None:
            return None
        return self.gateways(session, update.device_id, update.online)

    def _follow(self, session: Session, device: Device, update: StatusUpdate) -> None:
        """Keep the registry record equal to what the device announced: its versions, and
        ``active`` from its first connect on."""
        changed: dict[str, Any] = {}
        for column, announced in (
            ("firmware_version", update.firmware_version),
            ("schema_version", update.schema),
        ):
            if announced and getattr(device, column) != announced:
                changed[column] = [getattr(device, column), announced]
                setattr(device, column, announced)
        if changed and self.audit is not None:
            self.audit(session, "device.announce", device, changed)
        # A quarantined device is not in service: it stays where it was until approved.
        if update.online and device.state in ACTIVATED_BY_CONNECT and not device.quarantine_reason:
            before = device.state
            device.state = LifecycleState.ACTIVE
            log.info("device %s connected for the first time: %s -> active", device.id, before)
            if self.audit is not None:
                details = {"state": [before.value, LifecycleState.ACTIVE.value]}
                self.audit(session, "device.activate", device, {**details, "cause": "connected"})

    def _check_trust(self, session: Session, device: Device, update: StatusUpdate) -> None:
        """Quarantine a device that connected without being approved, or whose hardware IDs
        differ from the enrolled ones (issue 14: nobody connects without the set of IDs)."""
        if device.approved_at is None:
            if quarantine.put(session, device, NOT_APPROVED, self.audit, {"cause": "connected"}):
                log.warning("device %s connected without approval: quarantined", device.id)
                self._quarantined.append(device.id)
            return
        found = hardware.differences(device.chip_id, device.slave_ids, update.hardware)
        if not found:
            return
        reason = "hardware IDs changed: " + "; ".join(found)
        details = {
            "enrolled": {"chip": device.chip_id, "slaves": device.slave_ids},
            "reported": update.hardware,
        }
        if quarantine.put(session, device, reason, self.audit, details):
            self._quarantined.append(device.id)
            # The alarm: a counter to alert on, an error in the log, and the audited quarantine
            # entry (GET /api/v1/quarantine lists the device with this reason).
            hardware.HARDWARE_MISMATCHES.inc()
            log.error("device %s quarantined, a swapped board? %s", device.id, reason)

    def _refresh_gauge(self) -> None:
        # The quarantine count changes rarely (and mostly through the API): counted at most
        # every QUARANTINE_COUNT_EVERY seconds, not at every status of a connect storm.
        now = time.monotonic()
        count_quarantined = now >= self._quarantine_counted + QUARANTINE_COUNT_EVERY
        with self.database.transaction() as session:
            online = session.scalar(select(func.count()).where(DeviceStatus.online.is_(True)))
            if count_quarantined:
                quarantined = session.scalar(
                    select(func.count()).where(Device.quarantine_reason.is_not(None))
                )
        DEVICES_ONLINE.set(online or 0)
        if count_quarantined:
            self._quarantine_counted = now
            DEVICES_QUARANTINED.set(quarantined or 0)
