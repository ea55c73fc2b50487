"""Marshmallow fields with the limits the database needs, so bad input is a 422, never a 500."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from cloud.db import MAX_ID


class Text(fields.String):
    """A string with a maximum length and valid UTF-8 (lone surrogates cannot be stored)."""

    def __init__(self, max_length: int, min_length: int = 0, **kwargs: Any) -> None:
        extra = kwargs.pop("validate", None)
        validators: list[Any] = [validate.Length(min=min_length, max=max_length)]
        if extra is not None:
            validators.extend(extra if isinstance(extra, list) else [extra])
        super().__init__(validate=validators, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return storable(super()._deserialize(value, attr, data, **kwargs))


def storable(text: str) -> str:
    """``text`` if the database can store it: valid UTF-8 (no lone surrogate), no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ma.ValidationError("Not valid UTF-8 text.") from exc
    if "\x00" in text:
        raise ma.ValidationError("NUL characters are not allowed.")
    return text


class Email(fields.Email):
    """An e-mail address that can be stored (marshmallow's check lets lone surrogates by)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return storable(super()._deserialize(value, attr, data, **kwargs))


class Number(fields.Float):
    """A JSON number: like ids, strict (no "1.5" strings); no NaN or infinity."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, str):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class DecimalNumber(fields.Decimal):
    """A decimal accepted as a JSON string (``"0.39"``) or number (``0.39``), answered as a
    string. Documented as either (``anyOf``; the app maps this class to no single type)."""

    def __init__(self, example: str = "0.3000", **kwargs: Any) -> None:
        metadata = kwargs.setdefault("metadata", {})
        metadata.setdefault("anyOf", [{"type": "string", "example": example}, {"type": "number"}])
        kwargs.setdefault("as_string", True)
        super().__init__(**kwargs)


class UtcDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with its zone, as UTC; one with no UTC equivalent is a 422."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        moment: dt.datetime = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(dt.UTC)
        except OverflowError as exc:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
            raise ma.ValidationError("Out of range once converted to UTC.") from exc


def Id(*, strict: bool = True, **kwargs: Any) -> fields.Integer:  # noqa: N802 - a field type
    """A record id: a positive 32-bit integer; strict (no "5") in JSON bodies."""
    return fields.Integer(strict=strict, validate=validate.Range(min=1, max=MAX_ID), **kwargs)


def QueryId(**kwargs: Any) -> fields.Integer:  # noqa: N802 - a field type
    """A record id in a query string, where every value arrives as text."""
    return Id(strict=False, **kwargs)


class Links(fields.Method):
    """HAL-style ``_links`` (REST maturity level 3): built by the schema's ``links`` method."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(serialize="links", dump_only=True, data_key="_links", **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        links: dict[str, str] = super()._serialize(value, attr, obj, **kwargs)
        return {rel: {"href": href} for rel, href in links.items()}


_RELATIVE = re.compile(r"^-(\d{1,9})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Moment(UtcDateTime):
    """A moment in a query: ISO 8601 with its zone, ``now``, or a time before now such as
    ``-15m``, ``-1h``, ``-7d`` (units s, m, h, d, w), as InfluxDB and Grafana write them."""

    default_error_messages = {
        "invalid": "Not a moment: use ISO 8601 with a zone (2026-12-07T10:00:00Z), "
        "'now', or a time before now such as -15m, -1h, -7d.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        text = value.strip() if isinstance(value, str) else value
        if text == "now":
            return dt.datetime.now(dt.UTC)
        relative = _RELATIVE.match(text) if isinstance(text, str) else None
        if relative is None:
            return super()._deserialize(value, attr, data, **kwargs)
        amount, unit = int(relative.group(1)), relative.group(2)
        try:
            return dt.datetime.now(dt.UTC) - dt.timedelta(**{_UNITS[unit]: amount})
        except OverflowError as exc:
            raise self.make_error("invalid") from exc
