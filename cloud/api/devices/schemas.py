"""Device and device-group representations."""

from __future__ import annotations

import re
from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate

from cloud.api.fields import Id, QueryId, Text
from cloud.api.schemas import ResourceSchema, Schema
from cloud.devices.models import LifecycleState, Protocol
from parameters import known_families

# The id is the MQTT client id, username, topic root and certificate CN: no '/', '+', '#'.
DEVICE_ID = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    error="Use letters, digits, '-', '_' and '.', starting with a "
    "letter or digit (it becomes the MQTT client id).",
)
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")


def normalise_mac(raw: str) -> str:
    """AA:BB:CC:DD:EE:FF from aa-bb-..., aabbcc... or AA:BB:...; ValueError otherwise."""
    if not _MAC.match(raw):
        raise ValueError(raw)
    digits = re.sub(r"[:-]", "", raw).upper()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


class Mac(fields.String):
    """A MAC address in any common notation, stored normalised."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        raw: str = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalise_mac(raw)
        except ValueError as exc:
            raise ValidationError("Not a MAC address, e.g. 24:0A:C4:12:34:56.") from exc


def known_family(value: str) -> None:
    """Refuse a hardware family with no shipped parameter schema, listing the known ones."""
    families = known_families()
    if value not in families:
        raise ValidationError(f"Unknown hardware family {value!r}; known: {', '.join(families)}.")


_FAMILY_DOC = {"description": "A shipped hardware family: " + ", ".join(known_families()) + "."}


_STATE = fields.Enum(LifecycleState, by_value=True)


class DeviceSchema(ResourceSchema):
    """A device (charger)."""

    id = Text(
        64,
        validate=DEVICE_ID,
        load_default=None,
        metadata={"description": "Device id; generated when omitted."},
    )
    serial = Text(64, min_length=1, required=True)
    mac = Mac(allow_none=True, load_default=None)
    name = Text(200, load_default="")
    hardware_family = Text(
        64, min_length=1, required=True, validate=known_family, metadata=_FAMILY_DOC
    )
    firmware_version = Text(
        64,
        allow_none=True,
        load_default=None,
        metadata={"description": "Set by the device: the version its status announces."},
    )
    schema_version = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Parameter schema the device announced (`ac22-3p.3`)."},
    )
    protocol = fields.Enum(Protocol, by_value=True, load_default=Protocol.NATIVE)
    state = fields.Enum(LifecycleState, by_value=True, load_default=LifecycleState.MANUFACTURED)
    organization_id = Id(load_default=None)
    site_id = Id(allow_none=True, load_default=None)
    group_ids = fields.Function(lambda d: sorted(g.id for g in d.groups), dump_only=True)
    approved_at = fields.DateTime(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "When the device was approved to be in service (null: it is "
            "quarantined when it connects); docs/manufacturing.md."
        },
    )
    approved_by = fields.String(dump_only=True, allow_none=True)
    quarantine_reason = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Why it may only publish its status; null: not quarantined."},
    )
    quarantined_at = fields.DateTime(dump_only=True, allow_none=True)
    chip_id = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Master chip id bound at enrollment (hex)."},
    )
    slave_ids = fields.List(
        fields.String(),
        dump_only=True,
        allow_none=True,
        metadata={"description": "Slave MCU unique ids bound at enrollment (hex)."},
    )

    def links(self, obj: Any) -> dict[str, str]:
        links = {
            "self": url_for("devices.Device", device_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
            "audit": url_for("audit.AuditLog", object_type="device", object_id=obj.id),
        }
        if obj.site_id is not None:
            links["site"] = url_for("sites.Site", site_id=obj.site_id)
        return links


class DeviceUpdateSchema(Schema):
    """The fields of a device record that can change through the API."""

    name = Text(200)
    site_id = Id(
        allow_none=True,
        metadata={"description": "A site of the device's (new) organization, or null."},
    )
    organization_id = Id(
        metadata={
            "description": "Move the device to another organization (platform admins only): "
            "its site, groups, owner and guest access and card lists stay behind."
        }
    )
    firmware_version = Text(64, allow_none=True)
    hardware_family = Text(64, min_length=1, validate=known_family, metadata=_FAMILY_DOC)
    state = fields.Enum(
        LifecycleState,
        by_value=True,
        metadata={
            "description": "manufactured → provisioned → released → active ⇄ suspended "
            "(released by scanning both labels: `POST /releases`); any → decommissioned."
        },
    )


class DeviceQuerySchema(Schema):
    """Device search."""

    serial = Text(64)
    mac = Mac()
    hardware_family = Text(64)
    state = fields.Enum(LifecycleState, by_value=True)
    protocol = fields.Enum(Protocol, by_value=True)
    organization_id = QueryId()
    site_id = QueryId()
    group_id = QueryId()
    q = Text(200, metadata={"description": "Substring of the id, serial or name."})


class DeviceGroupSchema(ResourceSchema):
    """A device group."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(load_default=None)
    name = Text(200, min_length=1, required=True)
    description = Text(1000, load_default="")

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("device_groups.DeviceGroup", group_id=obj.id),
            "devices": url_for("device_groups.Members", group_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
        }


class DeviceGroupUpdateSchema(Schema):
    """The fields of a device group that can change."""

    name = Text(200, min_length=1)
    description = Text(1000)
