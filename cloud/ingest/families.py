"""Which schema rules apply to a device: its hardware family, from the registry, cached.

The ingest worker asks once per message, so answers come from memory: the whole registry's
device → family map is loaded at start, a device registered later is looked up on first sight,
and every answer is forgotten after ``ttl_s`` (a device moved to another family, or deleted, is
seen again within that time). Lookups fail open to "unchecked" while the database is down:
losing telemetry because the registry is briefly unreachable would be worse, and the
``ampfleet_samples_unchecked_total`` counter says it happened.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from cloud.db import Database
from cloud.devices.models import Device
from cloud.ingest.schema_check import TelemetryRules
from parameters import UnknownFamilyError, family_of

log = logging.getLogger(__name__)

UNKNOWN_DEVICE = "unknown_device"
UNKNOWN_FAMILY = "unknown_family"
REGISTRY_DOWN = "registry_unavailable"


class FamilyDirectory:
    """Device id → the telemetry rules of its family, or why there are none."""

    def __init__(self, database: Database, ttl_s: float = 300.0, retry_s: float = 5.0) -> None:
        self.database = database
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._devices: dict[str, tuple[float, str | None]] = {}  # id -> (expires, family id)
        self._rules: dict[str, TelemetryRules | None] = {}
        self._down_until = 0.0

    def preload(self) -> int:
        """Load every device's family in one query; how many devices (0 if the registry is down)."""
        expires = time.monotonic() + self.ttl_s
        try:
            with self.database.session() as session:
                rows = session.execute(select(Device.id, Device.hardware_family)).all()
        except SQLAlchemyError as exc:
            log.warning("device registry unavailable, schema checks wait for it: %s", exc)
            return 0
        self._devices = {device_id: (expires, family) for device_id, family in rows}
        return len(rows)

    def rules(self, device_id: str) -> TelemetryRules | str:
        """The rules for ``device_id``'s telemetry, or why it goes unchecked (a reason code)."""
        now = time.monotonic()
        cached = self._devices.get(device_id)
        if cached is None or cached[0] < now:
            if now < self._down_until:
                return REGISTRY_DOWN
            try:
                cached = (now + self.ttl_s, self._lookup(device_id))
            except SQLAlchemyError as exc:
                log.warning("device registry unavailable, telemetry unchecked: %s", exc)
                self._down_until = now + self.retry_s
                return REGISTRY_DOWN
            self._devices[device_id] = cached
        family_id = cached[1]
        if family_id is None:
            return UNKNOWN_DEVICE
        rules = self._family_rules(family_id)
        return UNKNOWN_FAMILY if rules is None else rules

    def _lookup(self, device_id: str) -> str | None:
        with self.database.session() as session:
            return session.scalar(select(Device.hardware_family).where(Device.id == device_id))

    def _family_rules(self, family_id: str) -> TelemetryRules | None:
        if family_id not in self._rules:
            try:
                self._rules[family_id] = TelemetryRules(family_of(family_id))
            except UnknownFamilyError:
                log.warning("hardware family %r has no parameter schema: unchecked", family_id)
                self._rules[family_id] = None
        return self._rules[family_id]
