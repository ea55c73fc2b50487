"""Bridge instances as the broker sees them: each one's status topic and last will.

MQTT gives a connection one will (MQTT-3.1.2-8), and a bridge carries thousands of chargers
on one connection: no will can name them. So the will names the bridge, and the records
name its chargers:

* a bridge's MQTT connection has a will on ``af/{bridge id}/status`` (offline, retained): the
  bridge id is its MQTT client id, a name that must not be a device id. The bridge publishes
  ``online`` there on every CONNACK, then its chargers' statuses again (a will fired while it
  was cut off from the broker marked them offline);
* each charger's record says which bridge announced it last (``OcppCharger.bridge_id``,
  written with the other connection facts by the ``Recorder``);
* the status worker, given a status for an id the registry does not know, asks
  ``bridge_status``: an ``offline`` of a bridge marks every online charger it held offline
  (``changed_at`` now), in the same transaction.

A charger that reconnected elsewhere before its new bridge's record was written may be marked
offline by the old bridge's will; its next status (a Heartbeat, a StatusNotification) puts it
online again.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.devices.models import DeviceStatus
from cloud.ocpp.models import OcppCharger
from firmware.core import contract
from firmware.core.topics import is_device_id

_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.-]")


def bridge_id_of(client_id: str) -> str:
    """The bridge's name on the broker: its client id, made a valid device-id level."""
    if is_device_id(client_id):
        return client_id
    cleaned = _NOT_IN_ID.sub("-", client_id).lstrip("_.-")[:64]
    return cleaned or "ocpp-bridge"


def status_topic(bridge_id: str) -> str:
    """Where the bridge announces itself, and where its will goes."""
    return contract.topic(bridge_id, contract.STATUS)


def bridge_status(session: Session, bridge_id: str, online: bool) -> list[str] | None:
    """Apply a bridge's status: None when ``bridge_id`` held no charger (not a bridge, as far as
    the records know); else the chargers its ``offline`` marked offline."""
    held = select(OcppCharger.device_id).where(OcppCharger.bridge_id == bridge_id)
    if session.scalar(held.limit(1)) is None:
        return None
    if online:
        return []
    now = utcnow()
    marked = []
    gone = select(DeviceStatus).where(
        DeviceStatus.device_id.in_(held.scalar_subquery()), DeviceStatus.online.is_(True)
    )
    for status in session.scalars(gone):
        status.online = False
        status.changed_at = now
        marked.append(status.device_id)
    return sorted(marked)
