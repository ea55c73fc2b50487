"""REST resources: /devices/{id}/parameters and /device-groups/{id}/parameters.

Every value is judged against the device's parameter schema (its ``hardware_family``) and every
write against the schema's ``write`` roles *before* anything is stored or sent: a refused value
never reaches a device. An accepted change is stored, audited and committed first, then sent
(retained ``config/desired`` + a ``config.apply`` command, see ``publisher``); a broker that
cannot be reached leaves it pending and unsent, and the config worker re-sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from flask.views import MethodView
from sqlalchemy import select

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.configuration.schemas import ParameterValueSchema, ParameterValuesSchema
from cloud.api.devices.groups import get_group
from cloud.api.devices.routes import get_device
from cloud.api.errors import fail, field_error, not_found
from cloud.api.publishers import desired_publisher
from cloud.api.records import commit
from cloud.api.scoping import device_clause
from cloud.configuration import UnknownFamilyError, schema_rules
from cloud.configuration.models import ChangeState, ConfigChange, DeviceConfiguration
from cloud.configuration.roles import roles_for_device
from cloud.configuration.service import configuration, describe_change, mark_sent, request_change
from cloud.db import request_session
from cloud.devices.models import Device, device_group_members
from parameters import Family, Parameter
from parameters import family_of as family_named

log = logging.getLogger(__name__)

PERMISSION = "devices:configure"
RECENT_CHANGES = 20

device_parameters = Blueprint(
    "device_parameters",
    __name__,
    url_prefix="/devices",
    description="Remote configuration: a device's parameters, desired and reported.",
)
group_parameters = Blueprint(
    "group_parameters",
    __name__,
    url_prefix="/device-groups",
    description="Remote configuration of every device of a group at once.",
)


def family_of(device: Device) -> Family:
    """The device's family; UnknownFamilyError (409 naming ``hardware_family``, answered by
    cloud.api.errors) when no schema is shipped for it."""
    return family_named(device.hardware_family)


def _forbidden_parameters(ids: list[str], roles: frozenset[str]) -> NoReturn:
    held = ", ".join(sorted(roles)) or "none"
    fail(
        403,
        message=f"none of your roles ({held}) may write {', '.join(ids)}",
        errors={"parameters": ids},
    )


def _refused(refused: Mapping[str, str], field: str = "values") -> NoReturn:
    detail = "; ".join(f"{key}: {why}" for key, why in sorted(refused.items()))
    fail(
        422,
        message=f"{field}: {detail}",
        errors={"json": {field: {key: [why] for key, why in refused.items()}}},
    )


def check_values(device: Device, values: Mapping[str, Any]) -> None:
    """Abort unless the caller may write every entry and the schema accepts every value:
    unknown or non-setting parameters and refused values are 422 naming ``values.<id>``, a
    parameter none of the caller's roles may write is 403."""
    family = family_of(device)
    refused = schema_rules.refusals(family, values)
    unknown = {key: why for key, why in refused.items() if key not in _ids(family)}
    if unknown:
        _refused(unknown)
    roles = roles_for_device(request_session(), current_principal(), device)
    denied = schema_rules.not_writable(family, values, roles)
    if denied:
        _forbidden_parameters(denied, roles)
    if refused:
        _refused(refused)


def _require_values(values: Mapping[str, Any]) -> None:
    if not values:
        field_error("values", "name at least one parameter")


def _ids(family: Family) -> frozenset[str]:
    return frozenset(p.id for p in family.parameters)


def apply_and_send(device: Device, values: Mapping[str, Any], reason: str | None) -> ConfigChange:
    """Store and audit one accepted change, commit, then send it (best effort)."""
    change = request_change(request_session(), device, values, current_principal(), reason)
    commit()
    send(device.id, change)
    return change


def send(device_id: str, change: ConfigChange) -> None:
    """Publish the device's current desired document under ``change``'s correlation id."""
    session = request_session()
    config = configuration(session, device_id)
    if desired_publisher().send(device_id, config.desired_version, dict(config.desired), change.id):
        mark_sent(session, [change.id])
        commit()
    else:
        log.warning(
            "change %s of %s stays unsent until the config worker re-sends it", change.id, device_id
        )


def _describe_parameter(
    parameter: Parameter,
    roles: frozenset[str],
    desired: Mapping[str, Any],
    reported: Mapping[str, Any],
) -> dict[str, Any]:
    spec = parameter.value
    out: dict[str, Any] = {
        "id": parameter.id,
        "label": parameter.label,
        "node": parameter.node,
        "kind": parameter.kind,
        "writable": schema_rules.may_write(parameter, roles),
    }
    if spec is not None:
        out.update(
            type=spec.type,
            unit=spec.unit,
            min=spec.minimum,
            max=spec.maximum,
            step=spec.step,
            values=list(spec.values) or None,
            default=spec.default,
        )
    if parameter.kind == "setting":
        out.update(
            reboot_required=parameter.reboot_required,
            desired=desired.get(parameter.id),
            reported=reported.get(parameter.id),
            in_delta=parameter.id in schema_rules.delta(desired, reported)
            if parameter.id in desired
            else False,
        )
    return out


def describe(device: Device) -> dict[str, Any]:
    """The configuration of ``device`` as the caller may see it."""
    session = request_session()
    family = family_of(device)
    roles = roles_for_device(session, current_principal(), device)
    visible = schema_rules.readable(family, roles)
    ids = {p.id for p in visible}
    # Read only: a device never configured has no row, and reading must not create one.
    config = session.get(DeviceConfiguration, device.id) or DeviceConfiguration(
        device_id=device.id, desired_version=0, desired={}
    )
    desired = {k: v for k, v in config.desired.items() if k in ids}
    reported = {k: v for k, v in (config.reported or {}).items() if k in ids}
    changes = list(
        session.scalars(
            select(ConfigChange)
            .where(ConfigChange.device_id == device.id)
            .order_by(ConfigChange.desired_version.desc())
            .limit(RECENT_CHANGES)
        )
    )
    return {
        "device_id": device.id,
        "hardware_family": device.hardware_family,
        "schema": family.schema_tag,
        "desired_version": config.desired_version,
        "reported_version": config.reported_version,
        "reported_at": config.reported_at.isoformat() if config.reported_at else None,
        "desired": desired,
        "reported": reported,
        "delta": schema_rules.delta(desired, reported),
        "parameters": [_describe_parameter(p, roles, desired, reported) for p in visible],
        "pending": [describe_change(c) for c in changes if c.state is ChangeState.PENDING],
        "changes": [describe_change(c) for c in changes],
    }


@device_parameters.route("/<string(maxlength=64):device_id>/parameters", endpoint="Parameters")
class Parameters(MethodView):
    @requires("devices:read")
    @device_parameters.etag
    @device_parameters.response(200)
    @device_parameters.alt_response(409, response="CONFLICT")
    def get(self, device_id: str) -> dict[str, Any]:
        """The parameters the caller may read: desired, reported, delta and recent changes."""
        device = get_device(device_id, "devices:read")
        return describe(device)

    @requires(PERMISSION)
    @device_parameters.arguments(ParameterValuesSchema)
    @device_parameters.response(202)
    def patch(self, data: dict[str, Any], device_id: str) -> dict[str, Any]:
        """Change several settings at once: all are accepted or none is."""
        device = get_device(device_id, PERMISSION)
        _require_values(data["values"])
        check_values(device, data["values"])
        return describe_change(apply_and_send(device, data["values"], data.get("reason")))


@device_parameters.route(
    "/<string(maxlength=64):device_id>/parameters/<string(maxlength=64):parameter_id>",
    endpoint="Parameter",
)
class ParameterItem(MethodView):
    @requires(PERMISSION)
    @device_parameters.arguments(ParameterValueSchema)
    @device_parameters.response(202)
    def put(self, data: dict[str, Any], device_id: str, parameter_id: str) -> dict[str, Any]:
        """Set one setting; 202 with the change, which is pending until the device reports."""
        device = get_device(device_id, PERMISSION)
        family = family_of(device)
        if parameter_id not in _ids(family):
            not_found("parameter")
        parameter = family.parameter(parameter_id)
        roles = roles_for_device(request_session(), current_principal(), device)
        if not schema_rules.may_write(parameter, roles):
            _forbidden_parameters([parameter_id], roles)
        refused = schema_rules.refusals(family, {parameter_id: data["value"]})
        if refused:
            reason = refused[parameter_id]
            fail(422, message=f"value: {reason}", errors={"json": {"value": [reason]}})
        change = apply_and_send(device, {parameter_id: data["value"]}, data.get("reason"))
        return describe_change(change)


@group_parameters.route("/<id:group_id>/parameters", endpoint="GroupParameters")
class GroupParameters(MethodView):
    @requires(PERMISSION)
    @group_parameters.arguments(ParameterValuesSchema)
    @group_parameters.response(202)
    def patch(self, data: dict[str, Any], group_id: int) -> dict[str, Any]:
        """Change settings on every device of the group, each judged against its own family.

        All or nothing: when any member refuses (unknown family, a value out of its range, a
        parameter the caller may not write there, a member out of the caller's reach), nothing
        changes and the answer names each member's problem.
        """
        group = get_group(group_id, "device-groups:read")
        _require_values(data["values"])
        session = request_session()
        members = list(
            session.scalars(
                select(Device)
                .where(
                    Device.id.in_(
                        select(device_group_members.c.device_id).where(
                            device_group_members.c.group_id == group.id
                        )
                    )
                )
                .order_by(Device.id)
            )
        )
        allowed = set(
            session.scalars(
                select(Device.id).where(
                    Device.id.in_([m.id for m in members]), device_clause(PERMISSION)
                )
            )
        )
        values: dict[str, Any] = data["values"]
        problems: dict[str, dict[str, list[str]]] = {}
        principal = current_principal()
        for device in members:
            if device.id not in allowed:
                problems[device.id] = {"device": [f"you may not {PERMISSION} this device"]}
                continue
            try:
                family = family_named(device.hardware_family)
            except UnknownFamilyError as exc:
                problems[device.id] = {"hardware_family": [str(exc)]}
                continue
            issues = {k: [v] for k, v in schema_rules.refusals(family, values).items()}
            roles = roles_for_device(session, principal, device)
            for key in values:
                if (
                    key in _ids(family)
                    and key not in issues
                    and not schema_rules.may_write(family.parameter(key), roles)
                ):
                    issues[key] = ["none of your roles may write it on this device"]
            if issues:
                problems[device.id] = issues
        if problems:
            fail(
                422,
                message=f"values: refused on {len(problems)} of {len(members)} devices",
                errors={"json": {"values": problems}},
            )
        changes = [
            request_change(session, device, values, principal, data.get("reason"))
            for device in members
        ]
        commit()
        for change in changes:
            send(change.device_id, change)
        return {
            "group_id": group.id,
            "devices": {change.device_id: describe_change(change) for change in changes},
        }
