"""Commands on the records: request, apply the device's answers, time out, describe.

Every function works in the caller's session and leaves the commit to it, so that a command
and its audit entry land together.

A ``cmd/result`` (docs/device-contract.md 4.6) moves a command: ``accepted`` → accepted (more
follows), ``ok`` → succeeded, ``rejected`` → rejected, ``error`` → error, each final answer
with the device's ``result`` and ``reason``. A final state never changes again: a redelivered
answer (QoS 1 is at least once) is harmless. A command with no final answer by its
``expires`` is timed_out by the worker's sweep.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.commands.models import FINAL_STATES, CommandState, DeviceCommand
from cloud.db import utcnow
from cloud.devices.models import Device
from cloud.identity.principal import Principal
from firmware.core import contract

MAX_REASON = 256
_BY_STATUS = {
    "accepted": CommandState.ACCEPTED,
    "ok": CommandState.SUCCEEDED,
    "rejected": CommandState.REJECTED,
    "error": CommandState.ERROR,
}


def command_id() -> str:
    """A new command id (contract 3: ``[A-Za-z0-9_.:-]{1,64}``) that sorts by creation time.

    The microseconds since the epoch come first, so commands created in the same second (the
    records keep seconds) still queue in the order they were made for an offline charger.
    """
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def expires_ms(command: DeviceCommand) -> int:
    """The command's ``expires`` in ms since the epoch (contract 4.5)."""
    return int(command.expires_at.timestamp() * 1000)


def request_command(
    session: Session,
    device: Device,
    name: str,
    args: dict[str, Any],
    timeout: dt.timedelta,
    actor: Principal | None,
) -> DeviceCommand:
    """Record an accepted command as pending and audit it; the caller commits, then sends."""
    now = utcnow()
    command = DeviceCommand(
        id=command_id(),
        device_id=device.id,
        name=name,
        args=dict(args),
        state=CommandState.PENDING,
        requested_by=actor.audit_id if actor else "system",
        expires_at=now + timeout,
        created_at=now,
    )
    session.add(command)
    record(
        session,
        actor,
        "device.command",
        "device",
        device.id,
        device.organization_id,
        {"command_id": command.id, "name": name, "args": dict(args)},
    )
    return command


def mark_sent(session: Session, command_ids: list[str]) -> None:
    """Note that the broker took these commands."""
    now = utcnow()
    for command_id in command_ids:
        command = session.get(DeviceCommand, command_id)
        if command is not None and command.sent_at is None:
            command.sent_at = now


def unsent(session: Session, now: dt.datetime | None = None) -> list[DeviceCommand]:
    """Pending commands the broker never got and that may still run, oldest first."""
    return list(
        session.scalars(
            select(DeviceCommand)
            .where(
                DeviceCommand.state == CommandState.PENDING,
                DeviceCommand.sent_at.is_(None),
                DeviceCommand.expires_at > (now or utcnow()),
            )
            .order_by(DeviceCommand.created_at)
        )
    )


def record_result(
    session: Session, device_id: str, result: contract.CommandResult
) -> DeviceCommand | None:
    """Apply a ``cmd/result`` to the command with its id (None: not a command of this API, or
    of another device)."""
    command = session.get(DeviceCommand, result.id)
    if command is None or command.device_id != device_id:
        return None
    if command.state in FINAL_STATES:
        return command  # a redelivery, or an answer after the timeout: the record stands
    state = _BY_STATUS[result.status]
    if state is CommandState.ACCEPTED and command.state is CommandState.ACCEPTED:
        return command
    command.state = state
    if result.result is not None:
        command.result = dict(result.result)
    if result.reason is not None:
        command.reason = result.reason[:MAX_REASON]
    if command.sent_at is None:
        command.sent_at = utcnow()  # it arrived, whoever sent it
    if state in FINAL_STATES:
        _audit(session, command, state, result.reason)
    return command


def sweep(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Time out the commands still open past their ``expires``; their ids."""
    stale = list(
        session.scalars(
            select(DeviceCommand).where(
                DeviceCommand.state.in_([CommandState.PENDING, CommandState.ACCEPTED]),
                DeviceCommand.expires_at < (now or utcnow()),
            )
        )
    )
    for command in stale:
        command.state = CommandState.TIMED_OUT
        command.reason = "no answer from the device before the command expired"
        _audit(session, command, CommandState.TIMED_OUT, command.reason)
    return [command.id for command in stale]


def _audit(
    session: Session, command: DeviceCommand, state: CommandState, reason: str | None
) -> None:
    device = session.get(Device, command.device_id)
    if device is None:
        return
    record(
        session,
        None,  # the device's answer (or its silence), recorded by the worker on its behalf
        f"device.command_{state.value}",
        "device",
        device.id,
        device.organization_id,
        {"command_id": command.id, "name": command.name, "reason": reason},
    )


def describe(command: DeviceCommand) -> dict[str, Any]:
    """The API representation of a command (links are added by the schema)."""
    return {
        "id": command.id,
        "device_id": command.device_id,
        "name": command.name,
        "args": command.args,
        "state": command.state.value,
        "result": command.result,
        "reason": command.reason,
        "requested_by": command.requested_by,
        "expires_at": command.expires_at,
        "sent": command.sent_at is not None,
        "created_at": command.created_at,
        "updated_at": command.updated_at,
    }
