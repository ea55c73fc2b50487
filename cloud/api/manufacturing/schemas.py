"""Representations of production batches, their serials, MAC pools, enrollments."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate, validates_schema

from cloud.api.devices.schemas import _FAMILY_DOC, known_family
from cloud.api.fields import Id, Text
from cloud.api.schemas import ResourceSchema, Schema
from cloud.manufacturing.batches import MAX_BATCH
from cloud.manufacturing.macpool import free
from cloud.manufacturing.macs import MAX_POOL_SIZE, format_mac
from cloud.manufacturing.models import BatchSerial, BatchState, MacPool

_HEX_ID = Text(
    47,
    min_length=2,
    metadata={"description": "Lowercase hex (`58cf790a1b2c`); `:`/`-` separators are dropped."},
)


class SerialRangeSchema(Schema):
    """``prefix`` + first..last zero-padded to ``digits``: AC22-000001 .. AC22-000050."""

    prefix = Text(50, load_default="")
    first = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    last = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    digits = fields.Integer(strict=True, load_default=6, validate=validate.Range(min=1, max=12))


class ExpectedSchema(Schema):
    """The hardware IDs the line expects on one serial's board, when known in advance."""

    serial = Text(64, min_length=1, required=True)
    chip_id = Text(47, min_length=2, allow_none=True, load_default=None)
    slave_ids = fields.List(
        Text(47, min_length=2), allow_none=True, load_default=None, validate=validate.Length(max=16)
    )


class BatchCreateSchema(Schema):
    """A new production batch: serials as a range or a list, and their count."""

    organization_id = Id(load_default=None)
    hardware_family = Text(
        64, min_length=1, required=True, validate=known_family, metadata=_FAMILY_DOC
    )
    count = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=MAX_BATCH)
    )
    serial_range = fields.Nested(SerialRangeSchema, load_default=None)
    serials = fields.List(
        Text(64, min_length=1), load_default=None, validate=validate.Length(max=MAX_BATCH)
    )
    expected = fields.List(
        fields.Nested(ExpectedSchema), load_default=list, validate=validate.Length(max=MAX_BATCH)
    )
    note = Text(1000, load_default="")

    @validates_schema(pass_original=True)
    def _one_way(self, data: dict[str, Any], original: Any, **_kwargs: Any) -> None:
        # Named here when one is given as null or both are given; when neither key is there
        # the domain names it (after the organization is checked).
        given = [
            k for k in ("serials", "serial_range") if isinstance(original, dict) and k in original
        ]
        if given and (data.get("serials") is None) == (data.get("serial_range") is None):
            message = "Give either serials or serial_range."
            raise ValidationError({key: [message] for key in given})


class BatchSchema(ResourceSchema):
    """A production batch: pending until a second admin approves it."""

    id = fields.Integer(dump_only=True)
    organization_id = fields.Integer(dump_only=True)
    hardware_family = fields.String(dump_only=True)
    count = fields.Integer(dump_only=True)
    note = fields.String(dump_only=True)
    state = fields.Enum(BatchState, by_value=True, dump_only=True)
    created_by = fields.String(dump_only=True)
    created_by_name = fields.String(dump_only=True)
    approved_by = fields.String(dump_only=True, allow_none=True)
    approved_by_name = fields.String(dump_only=True, allow_none=True)
    approved_at = fields.DateTime(dump_only=True, allow_none=True)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("batches.Batch", batch_id=obj.id),
            "serials": url_for("batches.Serials", batch_id=obj.id),
            "approve": url_for("batches.Approve", batch_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
        }


def serial_state(row: BatchSerial) -> str:
    """``enrolled``, ``approved`` (may enroll) or ``pending`` (its batch awaits approval)."""
    if row.enrolled_at is not None:
        return "enrolled"
    return "approved" if row.batch.state is BatchState.APPROVED else "pending"


class SerialSchema(Schema):
    """One serial of a batch: its state, expected hardware and enrollment record."""

    serial = fields.String(dump_only=True)
    batch_id = fields.Integer(dump_only=True)
    position = fields.Integer(dump_only=True)
    state = fields.Function(
        serial_state,
        dump_only=True,
        metadata={"description": "pending, approved (may enroll) or enrolled."},
    )
    expected_chip_id = fields.String(dump_only=True, allow_none=True)
    expected_slave_ids = fields.List(fields.String(), dump_only=True, allow_none=True)
    device_id = fields.String(dump_only=True, allow_none=True)
    enrolled_at = fields.DateTime(dump_only=True, allow_none=True)
    enrolled_by = fields.String(dump_only=True, allow_none=True)
    firmware_version = fields.String(dump_only=True, allow_none=True)
    certificate_serial = fields.String(dump_only=True, allow_none=True)


class SerialQuerySchema(Schema):
    """Filter a batch's serials."""

    state = fields.String(validate=validate.OneOf(["pending", "approved", "enrolled"]))


class MacPoolCreateSchema(Schema):
    """A block of MAC addresses: first + size, or first..last."""

    organization_id = Id(load_default=None)
    name = Text(200, load_default="")
    first = Text(17, required=True, metadata={"description": "AA:BB:CC:DD:EE:FF"})
    last = Text(17, load_default=None)
    size = fields.Integer(
        strict=True, load_default=None, validate=validate.Range(min=1, max=MAX_POOL_SIZE)
    )


class MacPoolSchema(ResourceSchema):
    """A MAC pool and how much of it is left."""

    id = fields.Integer(dump_only=True)
    organization_id = fields.Integer(dump_only=True)
    name = fields.String(dump_only=True)
    first = fields.Function(lambda p: format_mac(p.first), dump_only=True)
    last = fields.Function(lambda p: format_mac(p.last), dump_only=True)
    size = fields.Function(lambda p: p.last - p.first + 1, dump_only=True)
    next = fields.Function(
        lambda p: format_mac(p.next) if p.next <= p.last else None,
        dump_only=True,
        allow_none=True,
        metadata={"description": "The next address to hand out; null when exhausted."},
    )
    free = fields.Function(free, dump_only=True)
    created_by = fields.String(dump_only=True)
    updated_at = fields.DateTime(dump_only=True, attribute="created_at")

    def links(self, obj: MacPool) -> dict[str, str]:
        return {"self": url_for("mac_pools.MacPool", pool_id=obj.id)}


class EnrollmentSchema(Schema):
    """What a factory station sends for one board."""

    serial = Text(
        64,
        min_length=1,
        required=True,
        metadata={"description": "An approved batch's serial; it becomes the device id."},
    )
    csr = Text(
        16384,
        min_length=1,
        required=True,
        metadata={"description": "PEM PKCS#10 request; its subject CN must be the serial."},
    )
    chip_id = Text(
        47,
        min_length=2,
        required=True,
        metadata={"description": "The master chip's unique id (esptool read-mac), hex."},
    )
    slave_ids = fields.List(
        Text(47, min_length=2),
        required=True,
        validate=validate.Length(max=16),
        metadata={"description": "The slave MCUs' unique ids, hex."},
    )
    mac = Text(
        17,
        min_length=12,
        load_default=None,
        metadata={"description": "The chip's own MAC to record; omitted: one from the pool."},
    )


class FirmwareSchema(Schema):
    """The firmware to flash."""

    version = fields.String(dump_only=True)
    bundle = fields.String(dump_only=True)


class EnrolledSchema(Schema):
    """The enrollment's outcome: what the station writes into the board."""

    device_id = fields.String(dump_only=True, allow_none=True)
    serial = fields.String(dump_only=True)
    organization_id = fields.Integer(dump_only=True)
    hardware_family = fields.String(dump_only=True)
    state = fields.String(dump_only=True)
    mac = fields.String(dump_only=True)
    certificate = fields.String(dump_only=True, metadata={"description": "The device's PEM."})
    certificate_chain = fields.String(
        dump_only=True, metadata={"description": "The device certificate and its issuer(s)."}
    )
    certificate_serial = fields.String(dump_only=True, allow_none=True)
    not_after = fields.DateTime(dump_only=True)
    ca_chain = fields.String(
        dump_only=True, metadata={"description": "The CA certificates the device trusts."}
    )
    firmware = fields.Nested(FirmwareSchema, dump_only=True)
    guest_keys = fields.String(
        dump_only=True,
        metadata={
            "description": "The NVS record `guest_keys` (JSON text): the platform's public keys "
            "the charger checks guest credentials with, offline."
        },
    )
    links_ = fields.Dict(dump_only=True, data_key="_links")
