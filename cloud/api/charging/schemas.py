"""Representations of charging sessions and tariffs."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate

from cloud.api.fields import DecimalNumber, Id, QueryId, Text
from cloud.api.schemas import ResourceSchema, Schema
from cloud.billing import tariffs
from cloud.charging.models import SessionSource, SessionState

MAX_CONNECTOR = 32  # OCPP chargers number connectors (EVSEs) from 1; none has more

CURRENCY = validate.Regexp(r"^[A-Z]{3}$", error="An ISO 4217 code in capitals, e.g. EUR.")


class SessionStartSchema(Schema):
    """``POST /devices/{id}/sessions``: start charging from the app."""

    connector = fields.Integer(
        strict=True,
        validate=validate.Range(min=1, max=MAX_CONNECTOR),
        load_default=1,
        metadata={"description": "The connector to charge on (1 on a single-outlet charger)."},
    )


class SessionQuerySchema(Schema):
    """Filters of a charger's session list."""

    state = fields.Enum(SessionState, by_value=True)
    source = fields.Enum(SessionSource, by_value=True)


class SessionSchema(ResourceSchema):
    """A charging session: who, where, when, how much and at what cost."""

    id = fields.String(dump_only=True)
    device_id = fields.String(dump_only=True)
    organization_id = fields.Integer(dump_only=True)
    site_id = fields.Integer(dump_only=True, allow_none=True)
    charger_session_id = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "The charger's id for the session (OCPP transaction id)."},
    )
    connector = fields.Integer(dump_only=True)
    source = fields.Function(
        lambda s: s.source.value,
        dump_only=True,
        metadata={"description": "app, rfid, guest or free."},
    )
    state = fields.Function(
        lambda s: s.state.value,
        dump_only=True,
        metadata={"description": "requested, active, completed, failed or refused."},
    )
    user_id = fields.Integer(dump_only=True, allow_none=True)
    card_id = fields.Integer(dump_only=True, allow_none=True)
    id_tag = fields.String(dump_only=True, allow_none=True)
    command_id = fields.String(dump_only=True, allow_none=True)
    started_at = fields.DateTime(dump_only=True, allow_none=True)
    stopped_at = fields.DateTime(dump_only=True, allow_none=True)
    meter_start_wh = fields.Float(dump_only=True, allow_none=True)
    meter_stop_wh = fields.Float(dump_only=True, allow_none=True)
    energy_wh = fields.Float(dump_only=True)
    power_w = fields.Float(dump_only=True, allow_none=True)
    duration_s = fields.Integer(dump_only=True, allow_none=True)
    stop_reason = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={
            "description": "remote, local, ev_disconnected, schedule_end, fault, power_loss, "
            "card_refused or other."
        },
    )
    charger_reason = fields.String(
        dump_only=True,
        allow_none=True,
        metadata={"description": "The reason as the charger gave it (OCPP or native)."},
    )
    stop_requested_by = fields.String(dump_only=True, allow_none=True)
    stop_requested_at = fields.DateTime(dump_only=True, allow_none=True)
    tariff_id = fields.Integer(dump_only=True, allow_none=True)
    currency = fields.String(dump_only=True, allow_none=True)
    cost_cents = fields.Integer(
        dump_only=True,
        allow_none=True,
        metadata={"description": "Whole cents of `currency`; null without a tariff."},
    )
    reconciled = fields.Boolean(
        dump_only=True,
        metadata={"description": "Reported after the charger came back online."},
    )

    def links(self, obj: Any) -> dict[str, str]:
        links = {
            "self": url_for("charging_sessions.Session", session_id=obj.id),
            "stop": url_for("charging_sessions.Stop", session_id=obj.id),
            "device": url_for("devices.Device", device_id=obj.device_id),
            "live": url_for("device_sessions.Live", device_id=obj.device_id),
        }
        if obj.command_id is not None:
            links["command"] = url_for(
                "device_commands.Command", device_id=obj.device_id, command_id=obj.command_id
            )
        if obj.tariff_id is not None:
            links["tariff"] = url_for("tariffs.Tariff", tariff_id=obj.tariff_id)
        return links


class WindowSchema(Schema):
    """A time-of-day price (documentation of the items of ``windows``)."""

    start = fields.String(
        required=True, metadata={"description": "Local time HH:MM (the site's time zone)."}
    )
    end = fields.String(
        required=True,
        metadata={"description": "Local time HH:MM, 24:00 for midnight; before start: crosses it."},
    )
    price_per_kwh = DecimalNumber(
        example="0.1800",
        places=tariffs.PRICE_PLACES,
        required=True,
        metadata={
            "description": 'A decimal string or number, e.g. "0.1800"; answered as a string.'
        },
    )


def _nested_errors(error: tariffs.TariffError) -> ValidationError:
    """``windows.1.start`` and the like as marshmallow's nested errors inside ``windows``."""
    nested: dict[Any, Any] = {}
    listed: list[str] = []
    for field, message in error.errors.items():
        path = field.split(".")[1:]
        if not path:
            listed.append(message)
            continue
        # The first key is a list index (an int, as marshmallow's), the others field names:
        # kept as strings even when numeric ({"0": 1}), since JSON cannot sort mixed keys.
        keys: list[Any] = [int(path[0]) if path[0].isdigit() else path[0], *path[1:]]
        here = nested
        for key in keys[:-1]:
            here = here.setdefault(key, {})
        here.setdefault(keys[-1], []).append(message)
    return ValidationError(listed or nested)


class Windows(fields.List):
    """Tariff windows: validated as a whole (syntax, midnight, overlaps) by ``tariffs``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            fields.Nested(WindowSchema),
            validate=validate.Length(max=tariffs.MAX_WINDOWS),
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return tariffs.windows_json(tariffs.parse_windows(value))
        except tariffs.TariffError as exc:
            raise _nested_errors(exc) from exc


class Price(DecimalNumber):
    """A price per kWh: a decimal string (``"0.3000"``) or a JSON number (``0.3``), at most
    four decimals; answered as a string, which keeps every digit.

    A number is read through its shortest repr (``0.39`` -> ``"0.39"``), exact for any price
    with four decimals, so no binary rounding reaches the stored Numeric(10, 4).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(places=tariffs.PRICE_PLACES, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return tariffs.parse_price(value, attr or "price_per_kwh")
        except tariffs.TariffError as exc:
            raise ValidationError(exc.message) from exc


class TariffSchema(ResourceSchema):
    """A tariff of a charger, a site or (neither) the whole organization."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(load_default=None)
    site_id = Id(
        allow_none=True,
        load_default=None,
        metadata={"description": "A site's tariff (its chargers without their own)."},
    )
    device_id = Text(
        64,
        allow_none=True,
        load_default=None,
        metadata={"description": "One charger's tariff; neither set: the organization's."},
    )
    name = Text(200, min_length=1, required=True)
    currency = Text(3, validate=CURRENCY, load_default="EUR")
    price_per_kwh = Price(
        required=True,
        metadata={"description": 'Price per kWh outside every window, e.g. "0.3000".'},
    )
    windows = Windows(
        load_default=list,
        metadata={
            "description": "Time-of-day prices in the site's local time; they must not overlap."
        },
    )

    def links(self, obj: Any) -> dict[str, str]:
        links = {
            "self": url_for("tariffs.Tariff", tariff_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
        }
        if obj.site_id is not None:
            links["site"] = url_for("sites.Site", site_id=obj.site_id)
        if obj.device_id is not None:
            links["device"] = url_for("devices.Device", device_id=obj.device_id)
        return links


class TariffUpdateSchema(Schema):
    """The fields of a tariff that can change (not its scope)."""

    name = Text(200, min_length=1)
    currency = Text(3, validate=CURRENCY)
    price_per_kwh = Price()
    windows = Windows()


class TariffQuerySchema(Schema):
    """Tariff search."""

    organization_id = QueryId()
    site_id = QueryId()
    device_id = Text(64)
