"""Request bodies of the configuration resources (answers are built by the views)."""

from __future__ import annotations

from marshmallow import fields, validate

from cloud.api.fields import Text
from cloud.api.schemas import Schema
from firmware.core.contract import MAX_VALUES


class ParameterValueSchema(Schema):
    """``PUT /devices/{id}/parameters/{param}``."""

    # Any JSON: the parameter schema, not marshmallow, judges it (and says why).
    value = fields.Raw(required=True, allow_none=False)
    reason = Text(256, metadata={"description": "Why: kept in the audit log."})


class ParameterValuesSchema(Schema):
    """``PATCH .../parameters``: several parameters at once, all or nothing."""

    values = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=fields.Raw(allow_none=False),
        required=True,
        # At least one entry: checked by the views once the device is found (404 comes first).
        validate=validate.Length(max=MAX_VALUES),
    )
    reason = Text(256, metadata={"description": "Why: kept in the audit log."})
