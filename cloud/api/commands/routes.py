"""REST resources: /devices/{id}/commands.

A command is judged (``rules``) against the device family's schema and the caller's roles
where the device is *before* anything is stored or sent. An accepted command is stored,
audited and committed first, then published on ``af/{id}/cmd``; a broker that cannot be
reached leaves it pending and unsent, and the config worker re-sends it until it expires.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, select

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.commands.schemas import CommandRequestSchema, CommandSchema
from cloud.api.devices.routes import get_device
from cloud.api.errors import not_found
from cloud.api.publishers import command_publisher
from cloud.api.records import commit
from cloud.commands import rules
from cloud.commands.models import DeviceCommand
from cloud.commands.service import expires_ms, mark_sent, request_command
from cloud.configuration import UnknownFamilyError
from cloud.configuration.roles import roles_for_device
from cloud.db import request_session
from parameters import family_of

log = logging.getLogger(__name__)

PERMISSION = "devices:command"

device_commands = Blueprint(
    "device_commands",
    __name__,
    url_prefix="/devices",
    description="Commands to devices, with their correlation ids and the devices' answers.",
)


@device_commands.route("/<string(maxlength=64):device_id>/commands", endpoint="Commands")
class Commands(MethodView):
    @requires("devices:read")
    @device_commands.response(200, CommandSchema(many=True))
    @device_commands.paginated()
    def get(self, device_id: str) -> Select[Any]:
        """The device's commands, newest first."""
        device = get_device(device_id, "devices:read")
        return (
            select(DeviceCommand)
            .where(DeviceCommand.device_id == device.id)
            .order_by(DeviceCommand.created_at.desc(), DeviceCommand.id)
        )

    @requires(PERMISSION)
    @device_commands.arguments(CommandRequestSchema)
    @device_commands.response(202, CommandSchema)
    def post(self, data: dict[str, Any], device_id: str) -> DeviceCommand:
        """Send a command; 202 with the command, pending until the device answers.

        The device's family schema must declare it, one of your roles where the device is
        must be allowed to send it, and its args must be the declared ones: otherwise 422
        (naming `name` or `args.<id>`) or 403, and nothing is sent.
        """
        device = get_device(device_id, PERMISSION)
        session = request_session()
        try:
            family = family_of(device.hardware_family)
        except UnknownFamilyError:
            family = None
        roles = roles_for_device(session, current_principal(), device)
        rules.check(family, data["name"], data["args"], roles)  # 422/403: cloud.api.errors
        command = request_command(
            session,
            device,
            data["name"],
            data["args"],
            dt.timedelta(seconds=data["timeout"]),
            current_principal(),
        )
        commit()
        publisher = command_publisher()
        if publisher.send_command(
            device.id, command.id, command.name, dict(command.args), expires_ms(command)
        ):
            mark_sent(session, [command.id])
            commit()
        else:
            log.warning(
                "command %s to %s stays unsent until the worker re-sends it", command.id, device.id
            )
        return command


@device_commands.route(
    "/<string(maxlength=64):device_id>/commands/<string(maxlength=64):command_id>",
    endpoint="Command",
)
class CommandItem(MethodView):
    @requires("devices:read")
    @device_commands.etag
    @device_commands.response(200, CommandSchema)
    def get(self, device_id: str, command_id: str) -> DeviceCommand:
        """One command: its state, the device's result and reason."""
        device = get_device(device_id, "devices:read")
        command = request_session().get(DeviceCommand, command_id)
        if command is None or command.device_id != device.id:
            not_found("command")
        return command
