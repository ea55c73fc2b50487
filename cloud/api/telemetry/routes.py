"""REST resources: a device's telemetry (latest, history with downsampling) and status, and the
fleet's online counts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView
from marshmallow import fields, validate, validates_schema
from marshmallow.exceptions import ValidationError
from sqlalchemy import case, func, select
from webargs.fields import DelimitedList

from cloud.api.auth import requires
from cloud.api.blueprint import Blueprint
from cloud.api.devices.routes import get_device
from cloud.api.fields import Moment, QueryId, Text
from cloud.api.schemas import Schema
from cloud.api.scoping import device_clause
from cloud.configuration import UnknownFamilyError
from cloud.db import request_session
from cloud.devices.models import Device, DeviceStatus
from cloud.telemetry.store import TelemetryStore
from parameters import family_of

telemetry = Blueprint(
    "telemetry",
    __name__,
    url_prefix="/devices",
    description="Telemetry and connection status of devices.",
)
fleet = Blueprint(
    "fleet", __name__, url_prefix="/fleet", description="Fleet-wide figures: devices online."
)

MAX_POINTS = 10_000
DEFAULT_RANGE = dt.timedelta(hours=1)  # history without a start: the last hour
PARAM = validate.Regexp(r"^[a-z][a-z0-9_.]{0,63}$", error="Not a parameter id.")


def telemetry_store() -> TelemetryStore:
    """The app's telemetry store."""
    store: TelemetryStore = current_app.extensions["ampfleet.telemetry"]
    return store


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def schema_current(device: Device, reported_schema: str | None) -> bool | None:
    """Whether the announced schema tag is the device family's current one (None: unknowable,
    because the device never announced one or its family has no shipped schema)."""
    if reported_schema is None:
        return None
    try:
        family = family_of(device.hardware_family)
    except UnknownFamilyError:
        return None
    return reported_schema == family.schema_tag


class LatestQuerySchema(Schema):
    """Which node's latest values."""

    node = Text(64, validate=PARAM)


class HistoryQuerySchema(Schema):
    """A time range of a device's telemetry."""

    start = Moment(
        metadata={
            "description": "Inclusive: ISO 8601 with zone, `now`, or relative (`-15m`, `-1h`, "
            "`-7d`); default one hour before `end`."
        }
    )
    end = Moment(metadata={"description": "Exclusive; like `start`; default now."})
    # Not named `fields`: that would shadow the marshmallow module in this class body.
    parameters = DelimitedList(
        Text(64, validate=PARAM),
        validate=validate.Length(max=64),
        data_key="fields",
        metadata={"description": "Comma-separated parameter ids."},
    )
    node = Text(64, validate=PARAM)
    interval = fields.Integer(
        strict=False,
        validate=validate.Range(min=1, max=31 * 86400),
        metadata={"description": "Downsampling interval, seconds."},
    )
    aggregate = fields.String(validate=validate.OneOf(["mean", "min", "max"]))
    limit = fields.Integer(
        strict=False, load_default=1000, validate=validate.Range(min=1, max=MAX_POINTS)
    )

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        end = data.setdefault("end", dt.datetime.now(dt.UTC))
        start = data.setdefault("start", end - DEFAULT_RANGE)
        if start >= end:
            raise ValidationError("Must be before end.", "start")
        if ("interval" in data) != ("aggregate" in data):
            raise ValidationError("interval and aggregate go together.", "aggregate")


class LatestValueSchema(Schema):
    """A parameter's newest value."""

    ts = fields.String()
    value = fields.Raw()


class LatestSchema(Schema):
    """The newest value of each parameter of a device node."""

    device_id = fields.String()
    node = fields.String()
    values = fields.Dict(keys=fields.String(), values=fields.Nested(LatestValueSchema))


class PointSchema(Schema):
    """One sample (or one interval's aggregate)."""

    ts = fields.String()
    values = fields.Dict()


class StatusSchema(Schema):
    """A device's connection status, and what its firmware announced when it came online."""

    device_id = fields.String()
    online = fields.Boolean()
    changed_at = fields.DateTime(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)
    reported_firmware = fields.String(
        allow_none=True,
        metadata={"description": "Firmware version the device announced (`status.fw`)."},
    )
    schema = fields.String(
        allow_none=True,
        metadata={
            "description": "Parameter schema the firmware announced it implements "
            "(`status.schema`, e.g. `ac22-3p.3`); null until it announces one."
        },
    )
    schema_current = fields.Boolean(
        allow_none=True,
        metadata={
            "description": "True when `schema` is the current schema of the device's "
            "hardware family, false when it differs (older or other firmware); null when the "
            "device never announced one or the family has no shipped schema."
        },
    )
    links_ = fields.Dict(data_key="_links")


class FleetQuerySchema(Schema):
    """Which organization."""

    organization_id = QueryId()


class FleetStatusSchema(Schema):
    """Counts of devices by connection state."""

    devices = fields.Integer()
    online = fields.Integer()
    offline = fields.Integer()
    never_seen = fields.Integer()


@telemetry.route("/<string(maxlength=64):device_id>/telemetry/latest", endpoint="Latest")
class Latest(MethodView):
    @requires("telemetry:read")
    @telemetry.arguments(LatestQuerySchema, location="query")
    @telemetry.response(200, LatestSchema)
    def get(self, query: dict[str, Any], device_id: str) -> dict[str, Any]:
        """The newest value of every parameter of the device (or of one of its nodes)."""
        device = get_device(device_id, "telemetry:read")
        node = query.get("node", "master")
        latest = telemetry_store().latest(device.id, node)  # StoreUnavailableError: 503
        return {
            "device_id": device.id,
            "node": node,
            "values": {k: {"ts": _iso(ts), "value": v} for k, (ts, v) in latest.items()},
        }


@telemetry.route("/<string(maxlength=64):device_id>/telemetry", endpoint="History")
class History(MethodView):
    @requires("telemetry:read")
    @telemetry.arguments(HistoryQuerySchema, location="query")
    @telemetry.response(200, PointSchema(many=True))
    def get(self, query: dict[str, Any], device_id: str) -> Any:
        """Samples in [start, end), optionally some fields, downsampled per interval (mean, min
        or max). At most `limit` points, oldest first; a Link rel="next" header continues."""
        device = get_device(device_id, "telemetry:read")
        start = _ms(query["start"])
        end = _ms(query["end"])  # both set by HistoryQuerySchema
        limit = query["limit"]
        points = telemetry_store().history(  # StoreUnavailableError: 503 (cloud.api.errors)
            device.id,
            start,
            end,
            fields=query.get("parameters"),
            node=query.get("node"),
            interval_s=query.get("interval"),
            aggregate=query.get("aggregate"),
            limit=limit + 1,
        )
        headers = {}
        if len(points) > limit:
            points = points[:limit]
            step = (query.get("interval") or 0) * 1000 or 1
            # Absolute bounds: a relative or omitted end would move on between the pages.
            args: dict[str, Any] = {
                **request.args.to_dict(),
                "start": _iso(points[-1].ts_ms + step),
                "end": _iso(end),
            }
            headers["Link"] = (
                f'<{url_for("telemetry.History", device_id=device.id, **args)}>; rel="next"'
            )
        body = [{"ts": _iso(p.ts_ms), "values": p.values} for p in points]
        return body, 200, headers


@telemetry.route("/<string(maxlength=64):device_id>/status", endpoint="Status")
class Status(MethodView):
    @requires("telemetry:read")
    @telemetry.response(200, StatusSchema)
    def get(self, device_id: str) -> dict[str, Any]:
        """Whether the device is connected, since when, and when it was last heard.

        Also the firmware version and parameter schema the device announced when it came
        online; `schema_current` tells whether that schema is still its family's current one.
        """
        device = get_device(device_id, "telemetry:read")
        status = request_session().get(DeviceStatus, device.id)
        reported_schema = status.reported_schema if status else None
        return {
            "device_id": device.id,
            "online": bool(status and status.online),
            "changed_at": status.changed_at if status else None,
            "last_seen_at": status.last_seen_at if status else None,
            "reported_firmware": status.reported_firmware if status else None,
            "schema": reported_schema,
            "schema_current": schema_current(device, reported_schema),
            "links_": {
                "self": {"href": url_for("telemetry.Status", device_id=device.id)},
                "device": {"href": url_for("devices.Device", device_id=device.id)},
            },
        }


@fleet.route("/status", endpoint="FleetStatus")
class FleetStatus(MethodView):
    @requires("telemetry:read")
    @fleet.arguments(FleetQuerySchema, location="query")
    @fleet.response(200, FleetStatusSchema)
    def get(self, query: dict[str, Any]) -> dict[str, int]:
        """How many of the caller's devices are online, offline, or never seen."""
        stmt = (
            select(
                func.count(Device.id),
                func.sum(case((DeviceStatus.online.is_(True), 1), else_=0)),
                func.sum(case((DeviceStatus.device_id.is_(None), 1), else_=0)),
            )
            .select_from(Device)
            .outerjoin(DeviceStatus)
            .where(device_clause("telemetry:read"))
        )
        if "organization_id" in query:
            stmt = stmt.where(Device.organization_id == query["organization_id"])
        total, online, never = request_session().execute(stmt).one()
        total, online, never = int(total or 0), int(online or 0), int(never or 0)
        return {
            "devices": total,
            "online": online,
            "offline": total - online - never,
            "never_seen": never,
        }
