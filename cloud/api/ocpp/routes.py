"""REST resource: /devices/{id}/ocpp, what the bridge knows of an OCPP charger and its switch.

``lenient`` turns off the JSON-schema check of what this charger sends (a vendor known to
deviate from the schemas); everything else is what its last BootNotification said.
"""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask.views import MethodView
from marshmallow import fields

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.errors import fail
from cloud.api.records import commit
from cloud.api.schemas import Schema
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.devices.models import Device, Protocol
from cloud.ocpp.models import OcppCharger

ocpp_chargers = Blueprint(
    "ocpp_chargers",
    __name__,
    url_prefix="/devices",
    description="OCPP chargers: what their BootNotification said, and their switches.",
)


class OcppChargerSchema(Schema):
    """An OCPP charger as the bridge knows it."""

    device_id = fields.String(dump_only=True)
    lenient = fields.Boolean(
        required=True,
        metadata={"description": "Skip the schema check of what this charger sends."},
    )
    ocpp_version = fields.String(dump_only=True, allow_none=True)
    vendor = fields.String(dump_only=True, allow_none=True)
    model = fields.String(dump_only=True, allow_none=True)
    serial_number = fields.String(dump_only=True, allow_none=True)
    firmware_version = fields.String(dump_only=True, allow_none=True)
    last_boot_at = fields.DateTime(dump_only=True, allow_none=True)
    updated_at = fields.DateTime(dump_only=True)
    links_ = fields.Method("links", dump_only=True, data_key="_links")

    def links(self, obj: Any) -> dict[str, Any]:
        return {
            "self": {"href": url_for("ocpp_chargers.OcppCharger", device_id=obj.device_id)},
            "device": {"href": url_for("devices.Device", device_id=obj.device_id)},
        }


def _charger(device: Device, create: bool) -> OcppCharger:
    """The charger's record; one never connected and never switched reads as the defaults
    (stored only when ``create``: reading must not write)."""
    if device.protocol is not Protocol.OCPP:
        fail(409, message="protocol: not an OCPP charger", errors={"protocol": ["not ocpp"]})
    session = request_session()
    charger = session.get(OcppCharger, device.id)
    if charger is None:
        charger = OcppCharger(device_id=device.id, lenient=False)
        if create:
            session.add(charger)
        else:
            charger.updated_at = device.updated_at
    return charger


@ocpp_chargers.route("/<string(maxlength=64):device_id>/ocpp", endpoint="OcppCharger")
class OcppChargerItem(MethodView):
    @requires("devices:read")
    @ocpp_chargers.etag
    @ocpp_chargers.response(200, OcppChargerSchema)
    @ocpp_chargers.alt_response(409, response="CONFLICT")
    def get(self, device_id: str) -> OcppCharger:
        """What the bridge knows of the charger (409 for a device that is not OCPP)."""
        return _charger(get_device(device_id, "devices:read"), create=False)

    @requires("devices:update")
    @ocpp_chargers.arguments(OcppChargerSchema)
    @ocpp_chargers.response(200, OcppChargerSchema)
    def put(self, data: dict[str, Any], device_id: str) -> OcppCharger:
        """Set the charger's switches; the bridge applies them at its next connection."""
        device = get_device(device_id, "devices:update")
        charger = _charger(device, create=True)
        diff = changes(charger, {"lenient": data["lenient"]})
        if diff:
            record(
                request_session(),
                current_principal(),
                "device.ocpp_update",
                "device",
                device.id,
                device.organization_id,
                diff,
            )
        commit()
        return charger
