"""REST resources: charging sessions (start, stop, read, the live view).

Starting from the app records a REQUESTED session and sends ``charging.start`` with a fresh
``app-...`` id tag (docs/device-contract.md 14); the charger's ``charging.started`` with that
tag turns it ACTIVE (``cloud.charging.worker``). Stopping records who asked and sends
``charging.stop``; only the charger's ``charging.stopped`` ends the session, so two stops at
once still end it once.

Who sees which sessions of a charger: holders of ``sessions:read`` on it (operators, its
owners) see them all; those who may only start sessions there (a guest) see their own. The
same rule holds for stopping with ``charging:stop``. Commands are stored and committed before
they are published; a broker that cannot be reached leaves them for the config worker's
re-send, as the commands API does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from sqlalchemy import Select, select

from cloud.access.owners import role_covers
from cloud.api.auth import current_principal, requires, requires_any
from cloud.api.blueprint import Blueprint
from cloud.api.charging.schemas import (
    SessionQuerySchema,
    SessionSchema,
    SessionStartSchema,
)
from cloud.api.devices.routes import get_device
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.publishers import command_publisher
from cloud.api.records import commit
from cloud.api.scoping import device_clause
from cloud.audit.service import record
from cloud.charging import live
from cloud.charging.models import ChargingSession, SessionSource
from cloud.charging.sessions import busy, request_start, request_stop
from cloud.commands.models import DeviceCommand
from cloud.commands.service import expires_ms, mark_sent, request_command
from cloud.configuration import UnknownFamilyError
from cloud.db import get_database, request_session, utcnow
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel
from cloud.settings import Settings
from cloud.telemetry.store import TelemetryStore
from parameters import family_of

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

device_sessions = Blueprint(
    "device_sessions",
    __name__,
    url_prefix="/devices",
    description="Charging sessions of a charger: start from the app, history, live view.",
)
charging_sessions = Blueprint(
    "charging_sessions",
    __name__,
    url_prefix="/sessions",
    description="One charging session: read it, stop it.",
)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def _in_scope(device_id: str, permission: str) -> Device | None:
    return request_session().scalar(
        select(Device).where(Device.id == device_id, device_clause(permission))
    )


def _only_own(device: Device, permission: str) -> bool:
    """True when ``permission`` holds on the device only as its guest: own sessions only."""
    principal = current_principal()
    return principal.access_level(device.id) is AccessLevel.GUEST and not role_covers(
        principal, permission, device
    )


def _viewable_device(device_id: str) -> tuple[Device, int | None]:
    """The device and whose sessions the caller may read there (None: everyone's)."""
    device = _in_scope(device_id, "sessions:read")
    if device is not None:
        return device, None
    device = _in_scope(device_id, "charging:start")
    if device is not None:
        return device, current_principal().id
    get_device(device_id, "sessions:read")  # 404, or 403 when the caller can see the device
    raise AssertionError("get_device returned")  # pragma: no cover


def _load_session(session_id: str) -> ChargingSession:
    """A session the caller may read; 404 otherwise (another tenant's is unknown)."""
    found = request_session().get(ChargingSession, session_id)
    if found is None:
        not_found("session")
    principal = current_principal()
    if _in_scope(found.device_id, "sessions:read") is not None:
        return found
    if (
        principal.kind == "user"
        and found.user_id == principal.id
        and _in_scope(found.device_id, "charging:start") is not None
    ):
        return found
    not_found("session")


def _publish(device: Device, command: DeviceCommand) -> None:
    """Hand a committed command to the broker; unsent ones are re-sent by the config worker."""
    if command_publisher().send_command(
        device.id, command.id, command.name, dict(command.args), expires_ms(command)
    ):
        mark_sent(request_session(), [command.id])
        commit()
    else:
        log.warning(
            "command %s to %s stays unsent until the worker re-sends it", command.id, device.id
        )


def _check_connector(device: Device, connector: int) -> None:
    """422 naming ``connector`` past the connectors the family's ``charging.start`` declares."""
    try:
        start = family_of(device.hardware_family).parameter("charging.start")
    except (UnknownFamilyError, KeyError):
        return  # no schema to judge by: the charger answers for itself
    spec = next((a.value for a in start.args if a.id == "connector"), None)
    if spec is not None and spec.maximum is not None and connector > spec.maximum:
        field_error("connector", f"this charger has connectors 1 to {int(spec.maximum)}")


@device_sessions.route("/<string(maxlength=64):device_id>/sessions", endpoint="Sessions")
class DeviceSessions(MethodView):
    @requires_any("sessions:read", "charging:start")
    @device_sessions.arguments(SessionQuerySchema, location="query")
    @device_sessions.response(200, SessionSchema(many=True))
    @device_sessions.paginated()
    def get(self, query: dict[str, Any], device_id: str) -> Select[Any]:
        """The charger's sessions, newest first (a guest sees their own)."""
        device, only_user = _viewable_device(device_id)
        stmt = select(ChargingSession).where(ChargingSession.device_id == device.id)
        if only_user is not None:
            stmt = stmt.where(ChargingSession.user_id == only_user)
        for column in ("state", "source"):
            if column in query:
                stmt = stmt.where(getattr(ChargingSession, column) == query[column])
        return stmt.order_by(ChargingSession.created_at.desc(), ChargingSession.id)

    @requires("charging:start")
    @device_sessions.arguments(SessionStartSchema)
    @device_sessions.response(202, SessionSchema)
    def post(self, data: dict[str, Any], device_id: str) -> ChargingSession:
        """Start charging (the app's button): 202 with the session, requested until the
        charger reports it started.

        Sends `charging.start` with the connector and an `app-...` id tag; 409 (naming
        `connector`) while a session runs or is being started there.
        """
        device = get_device(device_id, "charging:start")
        session = request_session()
        principal = current_principal()
        timeout = dt.timedelta(seconds=_settings().charging_start_timeout)
        connector = data["connector"]
        _check_connector(device, connector)
        if busy(session, device.id, connector, utcnow(), timeout) is not None:
            field_error("connector", f"a session is already running on connector {connector}", 409)
        source = SessionSource.GUEST if _only_own(device, "charging:start") else SessionSource.APP
        charging, command = request_start(session, device, connector, source, principal, timeout)
        record(
            session,
            principal,
            "charging.start",
            "charging_session",
            charging.id,
            device.organization_id,
            {"device_id": device.id, "connector": connector, "source": source.value},
        )
        commit()
        _publish(device, command)
        return charging


#: One event of the live view's stream, as OpenAPI 3.0 describes an event stream (the schema of
#: each event); its ``data`` is JSON, described with JSON Schema's contentMediaType/contentSchema
#: (the keywords OpenAPI 3.1 adopts) so that a client or a fuzzer can check it.
LIVE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["session"]},
        "retry": {"type": "integer", "minimum": 0},
        "id": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["device_id", "session", "power_w", "energy_wh", "measured_at"],
                "properties": {
                    "device_id": {"type": "string"},
                    "session": {
                        "allOf": [{"$ref": "#/components/schemas/Session"}],
                        "nullable": True,
                    },
                    "power_w": {"type": "number", "nullable": True},
                    "energy_wh": {"type": "number", "nullable": True},
                    "measured_at": {"type": "string", "format": "date-time", "nullable": True},
                },
                "additionalProperties": False,
            },
        },
    },
}


@device_sessions.route("/<string(maxlength=64):device_id>/sessions/live", endpoint="Live")
class LiveView(MethodView):
    @requires_any("sessions:read", "charging:start")
    @device_sessions.doc(
        responses={
            "200": {
                "description": "A stream of server-sent events (`text/event-stream`). Each "
                "`session` event carries JSON: `{device_id, session, power_w, energy_wh, "
                "measured_at}` — the running session (null when none; a guest sees only "
                "their own) with the latest power (W) and the energy so far (Wh) from the "
                "telemetry store. Sent on connecting and whenever it changes (checked every "
                "second); `: keep-alive` comments otherwise. The stream ends after "
                "`AMPFLEET_CHARGING_LIVE_MAX_SECONDS`; EventSource clients reconnect by "
                "themselves (`retry`).",
                "content": {"text/event-stream": {"schema": LIVE_EVENT}},
            },
            "404": {"description": "Unknown charger, or not yours."},
        }
    )
    def get(self, device_id: str) -> Response:
        """The live view: the running session with its power and energy, as server-sent
        events."""
        device, only_user = _viewable_device(device_id)
        settings = _settings()
        database = get_database(current_app)
        store: TelemetryStore = current_app.extensions["ampfleet.telemetry"]
        viewer = live.Viewer(only_user)
        schema = SessionSchema()
        device_key = device.id
        request_session().close()  # the stream opens its own short transactions

        def view() -> dict[str, Any]:
            return live.snapshot(database, store, device_key, viewer, schema.dump)

        body = live.stream(view, max_seconds=float(settings.charging_live_max_seconds))
        return Response(
            stream_with_context(body),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


@charging_sessions.route("/<string(maxlength=32):session_id>", endpoint="Session")
class SessionItem(MethodView):
    @requires_any("sessions:read", "charging:start")
    @charging_sessions.etag
    @charging_sessions.response(200, SessionSchema)
    def get(self, session_id: str) -> ChargingSession:
        """One session: its state, energy, reasons and cost."""
        return _load_session(session_id)


@charging_sessions.route("/<string(maxlength=32):session_id>/stop", endpoint="Stop")
class SessionStop(MethodView):
    @requires("charging:stop")
    @charging_sessions.response(202, SessionSchema)
    def post(self, session_id: str) -> ChargingSession:
        """Stop a running session: 202; it stays active until the charger reports the stop.

        Records who asked and sends `charging.stop` for its connector. 409 when the session
        is not active (requested, completed, failed or refused).
        """
        charging = _load_session(session_id)
        device = _in_scope(charging.device_id, "charging:stop")
        principal = current_principal()
        if device is None:
            forbidden("charging:stop")
        if _only_own(device, "charging:stop") and charging.user_id != principal.id:
            not_found("session")
        session = request_session()
        request_stop(session, charging, principal, utcnow())  # SessionNotActiveError: 409
        timeout = dt.timedelta(seconds=_settings().charging_start_timeout)
        command = request_command(
            session, device, "charging.stop", {"connector": charging.connector}, timeout, principal
        )
        record(
            session,
            principal,
            "charging.stop",
            "charging_session",
            charging.id,
            charging.organization_id,
            {"device_id": device.id, "connector": charging.connector},
        )
        commit()
        _publish(device, command)
        return charging
