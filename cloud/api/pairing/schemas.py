"""Representations of label requests, releases and pairings."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate, validates_schema

from cloud.api.fields import Email, Links, Text
from cloud.api.schemas import Schema
from cloud.pairing.labels import FORMATS

MAX_LABELS = 100  # one request hashes one box code per device (argon2id): keep it short


class LabelRequestSchema(Schema):
    """Which devices to print labels for: a list, or the next sheet of a production batch."""

    device_ids = fields.List(
        Text(64, min_length=1),
        load_default=None,
        validate=validate.Length(min=1, max=MAX_LABELS),
        metadata={
            "description": f"Provisioned devices of your organization (1 to {MAX_LABELS}); "
            "give this or `batch_id`. Devices already labelled are reprinted."
        },
    )
    batch_id = fields.Integer(
        load_default=None,
        strict=True,
        validate=validate.Range(min=1),
        metadata={
            "description": "A production batch: its provisioned devices that have no labels "
            f"yet, in serial order, at most {MAX_LABELS} (call again for the next sheet)."
        },
    )
    format = fields.String(
        load_default=None,
        validate=validate.OneOf(sorted(FORMATS)),
        metadata={
            "description": "pdf or png; without it the Accept header decides (PDF by default)."
        },
    )

    @validates_schema
    def _one_selection(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("device_ids") is None) == (data.get("batch_id") is None):
            raise ValidationError("give either device_ids or batch_id", "device_ids")


class CodesSchema(Schema):
    """The two codes as scanned (dashes, spaces, case and O/0, I/L/1 look-alikes forgiven)."""

    charger_code = Text(
        64,
        min_length=1,
        required=True,
        metadata={"description": "The code on the charger's label (`XXXX-XXXX-XXXX`)."},
    )
    box_code = Text(
        64,
        min_length=1,
        required=True,
        metadata={"description": "The security code in its box (`XXXXX-XXXXX-XXXXX-XXXXX`)."},
    )


class ReleasedSchema(Schema):
    """A charger released to market."""

    device_id = fields.String(dump_only=True)
    serial = fields.String(dump_only=True)
    state = fields.String(dump_only=True)
    charger_code = fields.String(dump_only=True)
    released_at = fields.DateTime(dump_only=True)
    links_ = Links()

    def links(self, obj: Any) -> dict[str, str]:
        """The device released."""
        return {"device": url_for("devices.Device", device_id=obj["device_id"])}


class PairedSchema(Schema):
    """A charger paired to the caller."""

    device_id = fields.String(dump_only=True)
    device_name = fields.String(dump_only=True)
    level = fields.String(dump_only=True, metadata={"description": "owner"})
    paired_at = fields.DateTime(dump_only=True)
    links_ = Links()

    def links(self, obj: Any) -> dict[str, str]:
        """The device and the caller's access to it."""
        return {
            "device": url_for("devices.Device", device_id=obj["device_id"]),
            "access": url_for(
                "charger_access.Access", device_id=obj["device_id"], user_id=obj["user_id"]
            ),
        }


class TransferSchema(Schema):
    """Who receives the charger."""

    email = Email(
        required=True,
        validate=validate.Length(max=254),
        metadata={"description": "The e-mail of the receiver's existing account."},
    )
