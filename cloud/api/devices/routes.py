"""REST resources: /devices."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlalchemy import Select, or_, select

from cloud.access import outbox
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.broker_sync import refresh_broker
from cloud.api.devices.moving import (
    check_organization_move,
    check_site,
    leave_organization,
    record_move,
)
from cloud.api.devices.schemas import DeviceQuerySchema, DeviceSchema, DeviceUpdateSchema
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.publishers import desired_publisher
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import device_clause, target_org
from cloud.audit.service import changes, record
from cloud.db import request_session, utcnow
from cloud.devices.models import TRANSITIONS, Device, LifecycleState, device_group_members
from cloud.pki import service as pki
from cloud.settings import Settings

log = logging.getLogger(__name__)

devices = Blueprint(
    "devices",
    __name__,
    url_prefix="/devices",
    description="The device registry: native and OCPP chargers.",
)


def approval_by_registration() -> bool:
    """Whether an admin's POST /devices approves the device (setting ``device_approval``)."""
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings.device_approval == "registration"


def get_device(device_id: str, permission: str) -> Device:
    """A device where ``permission`` holds (org-wide, by site or by group); 404 if unseen."""
    session = request_session()
    device = session.scalar(select(Device).where(Device.id == device_id, device_clause(permission)))
    if device is None:
        if permission != "devices:read" and session.scalar(
            select(Device.id).where(Device.id == device_id, device_clause("devices:read"))
        ):
            forbidden(permission)
        not_found("device")
    return device


def _revoke_certificates(device: Device) -> None:
    """Put the device's certificates on the CRL (RFC 5280 cessationOfOperation): a scrapped or
    deleted charger's key must not connect again, not even as a device registered later under
    the same id."""
    settings: Settings = current_app.extensions["ampfleet.settings"]
    pki.revoke(
        request_session(),
        settings,
        device_id=device.id,
        reason="cessationOfOperation",
        actor=current_principal(),
    )


@devices.route("")
class Devices(MethodView):
    @requires("devices:read")
    @devices.arguments(DeviceQuerySchema, location="query")
    @devices.response(200, DeviceSchema(many=True))
    @devices.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """Search devices by serial, MAC, family, state, protocol, site, group or text."""
        stmt = select(Device).where(device_clause("devices:read"))
        for column in (
            "serial",
            "mac",
            "hardware_family",
            "state",
            "protocol",
            "organization_id",
            "site_id",
        ):
            if column in query:
                stmt = stmt.where(getattr(Device, column) == query[column])
        if "group_id" in query:
            stmt = stmt.where(
                Device.id.in_(
                    select(device_group_members.c.device_id).where(
                        device_group_members.c.group_id == query["group_id"]
                    )
                )
            )
        if "q" in query:
            pattern = "%" + query["q"].replace("%", r"\%").replace("_", r"\_") + "%"
            stmt = stmt.where(
                or_(
                    *(
                        column.like(pattern, escape="\\")
                        for column in (Device.id, Device.serial, Device.name)
                    )
                )
            )
        return stmt.order_by(Device.id)

    @requires("devices:create")
    @devices.arguments(DeviceSchema)
    @devices.response(201, DeviceSchema)
    def post(self, data: dict[str, Any]) -> Device:
        """Register a device."""
        data["organization_id"] = target_org(data["organization_id"], "devices:create")
        data["id"] = data["id"] or "af-" + secrets.token_hex(6)
        for field in ("id", "serial", "mac"):
            ensure_unique(Device, field, data[field])
        check_site(data["site_id"], data["organization_id"])
        device = Device(**data)
        if approval_by_registration():
            # An admin's registration is its approval (setting device_approval); under the
            # factory whitelist the device waits for enrollment or POST /devices/{id}/approve.
            device.approved_at = utcnow()
            device.approved_by = current_principal().audit_id
        session = request_session()
        session.add(device)
        session.flush()
        record(
            session,
            current_principal(),
            "device.create",
            "device",
            device.id,
            device.organization_id,
            {
                "serial": device.serial,
                "mac": device.mac,
                "hardware_family": device.hardware_family,
                "approved": device.approved_at is not None,
            },
        )
        commit()
        return device


@devices.route("/<string(maxlength=64):device_id>", endpoint="Device")
class DeviceItem(MethodView):
    @requires("devices:read")
    @devices.etag
    @devices.response(200, DeviceSchema)
    def get(self, device_id: str) -> Device:
        """Read a device."""
        return get_device(device_id, "devices:read")

    @requires("devices:update")
    @devices.etag
    @devices.arguments(DeviceUpdateSchema)
    @devices.response(200, DeviceSchema)
    def patch(self, data: dict[str, Any], device_id: str) -> Device:
        """Update a device's name, site, family, firmware version or lifecycle state; a platform
        admin may also move it to another organization (`organization_id`)."""
        device = get_device(device_id, "devices:update")
        devices.check_etag(device, DeviceSchema)
        session = request_session()
        before = device.organization_id
        moved = data.get("organization_id", before) != before
        if moved:
            check_organization_move(data["organization_id"])
            data.setdefault("site_id", None)  # the old site belongs to the old organization
        else:
            data.pop("organization_id", None)
        if "site_id" in data:
            check_site(data["site_id"], data.get("organization_id", before))
        new_state = data.get("state")
        if new_state not in (None, device.state) and new_state not in TRANSITIONS[device.state]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[device.state])) or "none"
            field_error(
                "state",
                f"cannot go from {device.state.value} to {new_state.value}; allowed: {allowed}",
                status=409,
            )
        left_behind = leave_organization(device) if moved else {}
        diff = changes(device, data)
        principal = current_principal()
        if moved:
            record_move(principal, device, before, diff, left_behind)
        elif diff:
            record(
                session,
                principal,
                "device.update",
                "device",
                device.id,
                device.organization_id,
                diff,
            )
        if moved or "site_id" in diff:  # who may charge here changed: so does the card list
            outbox.request_lists(session, [device.id])
        decommissioned = diff.get("state", [None, None])[1] == LifecycleState.DECOMMISSIONED.value
        if decommissioned:
            _revoke_certificates(device)
        commit()
        if decommissioned:
            # Its certificates were revoked: disconnected now, as any revocation. (Other
            # lifecycle changes reach Mosquitto at the next `ampfleet broker resync`.)
            refresh_broker("decommissioning", device.id, kick=True)
        return device

    @requires("devices:delete")
    @devices.etag
    @devices.response(204)
    def delete(self, device_id: str) -> None:
        """Delete a device from the registry (decommission it instead to keep its history).

        Its retained desired configuration is cleared on the broker too, so that a device
        registered again under the same id starts from nothing.
        """
        device = get_device(device_id, "devices:delete")
        devices.check_etag(device, DeviceSchema)
        session = request_session()
        deleted_id = device.id  # as stored (a case-insensitive collation may match another case)
        record(
            session,
            current_principal(),
            "device.delete",
            "device",
            device.id,
            device.organization_id,
            {"serial": device.serial},
        )
        _revoke_certificates(device)
        session.delete(device)
        commit()
        refresh_broker("deletion", deleted_id)  # no account any more: removed, disconnected
        # After the commit, best effort: the record is gone whatever the broker says.
        if not desired_publisher().clear(deleted_id):
            log.warning(
                "retained config/desired of deleted device %s left on the broker", deleted_id
            )
