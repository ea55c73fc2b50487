"""REST resources: /device-groups and their members."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, delete, insert, or_, select

from cloud.access import outbox
from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.devices.schemas import DeviceGroupSchema, DeviceGroupUpdateSchema, DeviceSchema
from cloud.api.errors import forbidden, not_found
from cloud.api.identity.schemas import OrgQuerySchema
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import target_org
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.devices.models import Device, DeviceGroup, device_group_members

device_groups = Blueprint(
    "device_groups",
    __name__,
    url_prefix="/device-groups",
    description="Device groups: fleets, rollout waves, customer lots.",
)


def _group_clause(permission: str) -> Any:
    scope = current_principal().scope(permission)
    if scope.orgs is None:
        return DeviceGroup.id.is_not(None)
    return or_(DeviceGroup.organization_id.in_(scope.orgs), DeviceGroup.id.in_(scope.groups))


def get_group(group_id: int, permission: str) -> DeviceGroup:
    """A group the caller may ``permission``: 404 if unseen, 403 if seen but not allowed."""
    session = request_session()
    group = session.scalar(
        select(DeviceGroup).where(DeviceGroup.id == group_id, _group_clause(permission))
    )
    if group is None:
        if permission != "device-groups:read" and session.scalar(
            select(DeviceGroup.id).where(
                DeviceGroup.id == group_id, _group_clause("device-groups:read")
            )
        ):
            forbidden(permission)
        not_found("device group")
    return group


@device_groups.route("")
class DeviceGroups(MethodView):
    @requires("device-groups:read")
    @device_groups.arguments(OrgQuerySchema, location="query")
    @device_groups.response(200, DeviceGroupSchema(many=True))
    @device_groups.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List device groups."""
        stmt = select(DeviceGroup).where(_group_clause("device-groups:read"))
        if "organization_id" in query:
            stmt = stmt.where(DeviceGroup.organization_id == query["organization_id"])
        return stmt.order_by(DeviceGroup.id)

    @requires("device-groups:write")
    @device_groups.arguments(DeviceGroupSchema)
    @device_groups.response(201, DeviceGroupSchema)
    def post(self, data: dict[str, Any]) -> DeviceGroup:
        """Create a device group."""
        data["organization_id"] = target_org(data["organization_id"], "device-groups:write")
        ensure_unique(DeviceGroup, "name", data["name"], organization_id=data["organization_id"])
        group = DeviceGroup(**data)
        session = request_session()
        session.add(group)
        session.flush()
        record(
            session,
            current_principal(),
            "device_group.create",
            "device_group",
            group.id,
            group.organization_id,
            {"name": group.name},
        )
        commit()
        return group


@device_groups.route("/<id:group_id>", endpoint="DeviceGroup")
class DeviceGroupItem(MethodView):
    @requires("device-groups:read")
    @device_groups.etag
    @device_groups.response(200, DeviceGroupSchema)
    def get(self, group_id: int) -> DeviceGroup:
        """Read a device group."""
        return get_group(group_id, "device-groups:read")

    @requires("device-groups:write")
    @device_groups.etag
    @device_groups.arguments(DeviceGroupUpdateSchema)
    @device_groups.response(200, DeviceGroupSchema)
    def patch(self, data: dict[str, Any], group_id: int) -> DeviceGroup:
        """Rename or describe a device group."""
        group = get_group(group_id, "device-groups:write")
        device_groups.check_etag(group, DeviceGroupSchema)
        if "name" in data:
            ensure_unique(
                DeviceGroup,
                "name",
                data["name"],
                exclude=group,
                organization_id=group.organization_id,
            )
        diff = changes(group, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "device_group.update",
                "device_group",
                group.id,
                group.organization_id,
                diff,
            )
        commit()
        return group

    @requires("device-groups:delete")
    @device_groups.etag
    @device_groups.response(204)
    def delete(self, group_id: int) -> None:
        """Delete a device group; its devices stay."""
        group = get_group(group_id, "device-groups:delete")
        device_groups.check_etag(group, DeviceGroupSchema)
        session = request_session()
        record(
            session,
            current_principal(),
            "device_group.delete",
            "device_group",
            group.id,
            group.organization_id,
            {"name": group.name},
        )
        # Roles narrowed to the group no longer reach its chargers: their card lists change.
        members = session.scalars(
            select(device_group_members.c.device_id).where(
                device_group_members.c.group_id == group.id
            )
        ).all()
        outbox.request_lists(session, members)
        session.delete(group)
        commit()


@device_groups.route("/<id:group_id>/devices", endpoint="Members")
class Members(MethodView):
    @requires("device-groups:read")
    @device_groups.response(200, DeviceSchema(many=True))
    @device_groups.paginated()
    def get(self, group_id: int) -> Select[Any]:
        """The devices in a group."""
        group = get_group(group_id, "device-groups:read")
        members = select(device_group_members.c.device_id).where(
            device_group_members.c.group_id == group.id
        )
        return select(Device).where(Device.id.in_(members)).order_by(Device.id)


@device_groups.route("/<id:group_id>/devices/<string(maxlength=64):device_id>", endpoint="Member")
class Member(MethodView):
    @requires("device-groups:write")
    @device_groups.response(204)
    def put(self, group_id: int, device_id: str) -> None:
        """Add a device of the group's organization to the group (idempotent)."""
        group = get_group(group_id, "device-groups:write")
        device = get_device(device_id, "devices:read")
        if device.organization_id != group.organization_id:
            not_found("device")
        session = request_session()
        if group not in device.groups:
            session.execute(
                insert(device_group_members).values(group_id=group.id, device_id=device.id)
            )
            record(
                session,
                current_principal(),
                "device_group.add_device",
                "device_group",
                group.id,
                group.organization_id,
                {"device_id": device.id},
            )
            # A role narrowed to the group now reaches this charger: its card list changes.
            outbox.request_lists(session, [device.id])
        commit()

    @requires("device-groups:write")
    @device_groups.response(204)
    def delete(self, group_id: int, device_id: str) -> None:
        """Remove a device from the group."""
        group = get_group(group_id, "device-groups:write")
        session = request_session()
        removed = session.execute(
            delete(device_group_members).where(
                device_group_members.c.group_id == group.id,
                device_group_members.c.device_id == device_id,
            )
        )
        if not removed.rowcount:  # type: ignore[attr-defined]
            not_found("device in this group")
        record(
            session,
            current_principal(),
            "device_group.remove_device",
            "device_group",
            group.id,
            group.organization_id,
            {"device_id": device_id},
        )
        outbox.request_lists(session, [device_id])
        commit()
