"""Configuration changes on the records: request, store what devices report, resolve changes.

Every function works in the caller's session and leaves the commit to it, so that a change, its
audit entry and its document land together (or not at all).

A change is resolved by what the device says (docs/device-contract.md 4.4 and 4.6):

* ``config/reported`` with ``version >= change.desired_version`` and the change's values:
  applied;
* the same version with other values: the device refused them (rejected); a later version with
  other values: rejected if the cloud still wants the change's values, else superseded;
* ``cmd/result`` for the change's id with ``rejected`` or ``error``: rejected, with the device's
  reason (which replaces the generic one from the report, whichever arrived first);
* nothing before the worker's timeout: timed_out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.configuration.models import ChangeState, ConfigChange, DeviceConfiguration
from cloud.configuration.schema_rules import same_value
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.principal import Principal
from firmware.core import contract

MAX_REASON = 256


def configuration(session: Session, device_id: str) -> DeviceConfiguration:
    """The device's document pair, created empty (version 0) on first use, and locked for the
    rest of the caller's transaction (the API and the config worker both write it)."""
    config = session.get(DeviceConfiguration, device_id, with_for_update=True)
    if config is None:
        # The API (a first change) and the config worker (a first report) race to create the
        # row: a plain INSERT lets the loser fail with a duplicate key. INSERT OR IGNORE
        # (SQLite) / INSERT IGNORE (MySQL) lets both go on, and the locking read that follows
        # sees the row whichever transaction made it. (No savepoint: pysqlite's are unreliable.)
        session.execute(
            insert(DeviceConfiguration)
            .prefix_with("OR IGNORE", dialect="sqlite")
            .prefix_with("IGNORE", dialect="mysql")
            .prefix_with("IGNORE", dialect="mariadb")
            .values(device_id=device_id, desired_version=0, desired={})
        )
        config = session.get(
            DeviceConfiguration, device_id, with_for_update=True, populate_existing=True
        )
        assert config is not None, "inserted or found just now"
    return config


def request_change(
    session: Session,
    device: Device,
    values: Mapping[str, Any],
    actor: Principal | None,
    reason: str | None = None,
) -> ConfigChange:
    """Merge ``values`` (already validated) into the desired document under a new version,
    record the change as pending and audit it (with the requester's ``reason``, if any). The
    caller commits, then sends."""
    config = configuration(session, device.id)
    # A new dict: SQLAlchemy's JSON type only notices reassignment, not in-place edits.
    config.desired = {**config.desired, **values}
    config.desired_version += 1
    change = ConfigChange(
        id=uuid.uuid4().hex,  # a command id: [A-Za-z0-9_.:-]{1,64} (contract 3)
        device_id=device.id,
        values=dict(values),
        desired_version=config.desired_version,
        state=ChangeState.PENDING,
        requested_by=actor.audit_id if actor else "system",
    )
    session.add(change)
    record(
        session,
        actor,
        "device.configure",
        "device",
        device.id,
        device.organization_id,
        {
            "change_id": change.id,
            "values": dict(values),
            "desired_version": change.desired_version,
            **({"reason": reason} if reason else {}),
        },
    )
    return change


def mark_sent(session: Session, change_ids: list[str]) -> None:
    """Note that the broker took the desired document of these changes."""
    now = utcnow()
    for change_id in change_ids:
        change = session.get(ConfigChange, change_id)
        if change is not None and change.sent_at is None:
            change.sent_at = now


def unsent(session: Session) -> list[ConfigChange]:
    """Pending changes whose desired document never reached the broker, oldest first."""
    return list(
        session.scalars(
            select(ConfigChange)
            .where(ConfigChange.state == ChangeState.PENDING, ConfigChange.sent_at.is_(None))
            .order_by(ConfigChange.created_at)
        )
    )


def record_reported(
    session: Session, device_id: str, reported: contract.Config
) -> list[ConfigChange]:
    """Store a reported document and resolve the pending changes it answers.

    Returns the changes resolved; nothing for a device the registry does not know.
    """
    device = session.get(Device, device_id)
    if device is None:
        return []
    config = configuration(session, device_id)
    config.reported_version = reported.version
    config.reported = dict(reported.values)
    config.reported_at = utcnow()
    resolved = []
    pending = session.scalars(
        select(ConfigChange).where(
            ConfigChange.device_id == device_id,
            ConfigChange.state == ChangeState.PENDING,
            ConfigChange.desired_version <= reported.version,
        )
    )
    for change in pending:
        differing = {
            key: reported.values.get(key)
            for key, value in change.values.items()
            if key not in reported.values or not same_value(reported.values[key], value)
        }
        if not differing:
            _resolve(session, device, change, ChangeState.APPLIED, None)
        elif change.desired_version == reported.version or _still_wanted(config, change):
            kept = ", ".join(f"{key}={value!r}" for key, value in sorted(differing.items()))
            _resolve(session, device, change, ChangeState.REJECTED, f"device kept {kept}")
        else:
            _resolve(session, device, change, ChangeState.SUPERSEDED, "a later change")
        resolved.append(change)
    return resolved


def _still_wanted(config: DeviceConfiguration, change: ConfigChange) -> bool:
    return all(
        key in config.desired and same_value(config.desired[key], value)
        for key, value in change.values.items()
    )


def record_result(
    session: Session, device_id: str, result: contract.CommandResult
) -> ConfigChange | None:
    """Apply a ``cmd/result`` to the change with its id (None: not a configuration command)."""
    change = session.get(ConfigChange, result.id)
    if change is None or change.device_id != device_id:
        return None
    device = session.get(Device, device_id)
    if device is None:
        return None
    # A report may have rejected it already with a generic reason: the device's is better.
    if result.status in ("rejected", "error") and change.state in (
        ChangeState.PENDING,
        ChangeState.REJECTED,
    ):
        _resolve(session, device, change, ChangeState.REJECTED, result.reason or result.status)
    # "ok" and "accepted" resolve nothing: only the reported document shows the values in force.
    return change


def sweep(session: Session, timeout: dt.timedelta, now: dt.datetime | None = None) -> list[str]:
    """Time out pending changes older than ``timeout``; their ids."""
    cutoff = (now or utcnow()) - timeout
    stale = list(
        session.scalars(
            select(ConfigChange).where(
                ConfigChange.state == ChangeState.PENDING, ConfigChange.created_at < cutoff
            )
        )
    )
    for change in stale:
        device = session.get(Device, change.device_id)
        if device is not None:
            _resolve(session, device, change, ChangeState.TIMED_OUT, "no answer from the device")
    return [change.id for change in stale]


def _resolve(
    session: Session,
    device: Device,
    change: ConfigChange,
    state: ChangeState,
    reason: str | None,
) -> None:
    previous = change.state
    change.state = state
    if reason is not None:
        change.reason = reason[:MAX_REASON]
    if previous is state:
        return  # a better reason only: the transition is already in the audit log
    record(
        session,
        None,  # the device's answer, recorded by the worker on its behalf
        f"device.configuration_{state.value}",
        "device",
        device.id,
        device.organization_id,
        {"change_id": change.id, "desired_version": change.desired_version, "reason": reason},
    )


def describe_change(change: ConfigChange) -> dict[str, Any]:
    """The API representation of a change."""
    return {
        "id": change.id,
        "device_id": change.device_id,
        "values": change.values,
        "desired_version": change.desired_version,
        "state": change.state.value,
        "reason": change.reason,
        "requested_by": change.requested_by,
        "sent": change.sent_at is not None,
        "created_at": change.created_at.isoformat(),
        "updated_at": change.updated_at.isoformat(),
    }
