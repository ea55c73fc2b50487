"""Representations of the commands resource."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import fields, validate

from cloud.api.fields import Text
from cloud.api.schemas import ResourceSchema, Schema

MAX_TIMEOUT = 86_400  # a day: past that, a command is a schedule, not a command
DEFAULT_TIMEOUT = 60


class CommandRequestSchema(Schema):
    """``POST /devices/{id}/commands``."""

    # The syntax (a contract identifier) and the schema's verdict are checked by the view once
    # the device is found, so that an unknown device answers 404 whatever the body says.
    name = Text(
        64,
        min_length=1,
        required=True,
        metadata={"description": "Command name, declared by the device's family schema."},
    )
    args = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Raw(allow_none=False),
        load_default=dict,
        metadata={"description": "Arguments, as the family schema declares them."},
    )
    timeout = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_TIMEOUT),
        load_default=DEFAULT_TIMEOUT,
        metadata={
            "description": "Seconds the device has to answer; also the command's `expires`: "
            "a device that gets it later does not run it."
        },
    )


class CommandSchema(ResourceSchema):
    """A command and where it is."""

    id = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True)
    name = fields.String(dump_only=True)
    args = fields.Dict(dump_only=True)
    state = fields.Function(
        lambda c: c.state.value,
        dump_only=True,
        metadata={
            "description": "pending, accepted, succeeded, rejected, error or timed_out.",
        },
    )
    result = fields.Dict(dump_only=True, allow_none=True)
    reason = fields.String(dump_only=True, allow_none=True)
    requested_by = fields.String(dump_only=True)
    expires_at = fields.DateTime(dump_only=True)
    sent = fields.Function(
        lambda c: c.sent_at is not None,
        dump_only=True,
        metadata={"description": "Whether the broker has taken it (else the worker re-sends)."},
    )

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("device_commands.Command", device_id=obj.device_id, command_id=obj.id),
            "device": url_for("devices.Device", device_id=obj.device_id),
        }
