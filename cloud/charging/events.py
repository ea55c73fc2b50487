"""Charging events at the edge: the ``data`` of ``charging.started``, ``charging.meter_start``,
``charging.stopped`` and ``authorization.refused`` (docs/device-contract.md 14) parsed into
frozen values. I/O-free.

``data`` is an open map in the contract codec (4.3), so its fields are checked here: a value
of the wrong type or size raises :class:`MalformedEventError` naming ``data.<field>``; a field
the OCPP bridge writes as ``null`` (it did not know it) counts as absent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from cloud.charging import ChargingError
from firmware.core import contract

STARTED = "charging.started"
METER_START = "charging.meter_start"
STOPPED = "charging.stopped"
REFUSED = "authorization.refused"
CHARGING_EVENTS = frozenset({STARTED, METER_START, STOPPED, REFUSED})
MAX_TEXT = 64  # session ids and id tags (contract 14; the columns' size)


class MalformedEventError(ChargingError):
    """A charging event whose ``data`` breaks contract 14; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True)
class Started:
    """``charging.started`` data."""

    session: str
    connector: int | None
    id_tag: str | None
    meter_start_wh: float | None


@dataclasses.dataclass(frozen=True)
class MeterStart:
    """``charging.meter_start`` data: the first meter value of a session whose start had
    none."""

    session: str
    connector: int | None
    meter_start_wh: float


@dataclasses.dataclass(frozen=True)
class Stopped:
    """``charging.stopped`` data."""

    session: str
    connector: int | None
    id_tag: str | None
    meter_stop_wh: float | None
    energy_wh: float | None
    duration_s: int | None
    reason: str | None
    ocpp_reason: str | None
    meter_start_wh: float | None = None  # what the charger took as the start, if it says


@dataclasses.dataclass(frozen=True)
class Refused:
    """``authorization.refused`` data."""

    id_tag: str
    connector: int | None
    reason: str | None


def _text(data: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:  # the bridge writes null for what it does not know: same as absent
        if required:
            raise MalformedEventError(f"data.{name}", "missing")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
        raise MalformedEventError(f"data.{name}", f"expected a string of 1 to {MAX_TEXT} chars")
    return value


def _number(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedEventError(f"data.{name}", "expected a number")
    if value < 0:
        raise MalformedEventError(f"data.{name}", "must not be negative")
    return float(value)


def _connector(data: Mapping[str, Any]) -> int | None:
    value = data.get("connector")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise MalformedEventError("data.connector", "expected an integer >= 1")
    return value


def parse_event(event: contract.Event) -> Started | MeterStart | Stopped | Refused | None:
    """The charging content of an event; None for events of other types."""
    data: Mapping[str, Any] = event.data or {}
    if event.type == STARTED:
        return Started(
            _text(data, "session", required=True) or "",
            _connector(data),
            _text(data, "id_tag"),
            _number(data, "meter_start_wh"),
        )
    if event.type == METER_START:
        meter_start = _number(data, "meter_start_wh")
        if meter_start is None:
            raise MalformedEventError("data.meter_start_wh", "missing")
        return MeterStart(
            _text(data, "session", required=True) or "", _connector(data), meter_start
        )
    if event.type == STOPPED:
        duration = _number(data, "duration_s")
        return Stopped(
            _text(data, "session", required=True) or "",
            _connector(data),
            _text(data, "id_tag"),
            _number(data, "meter_stop_wh"),
            _number(data, "energy_wh"),
            None if duration is None else round(duration),
            _text(data, "reason"),
            _text(data, "ocpp_reason"),
            _number(data, "meter_start_wh"),
        )
    if event.type == REFUSED:
        return Refused(
            _text(data, "id_tag", required=True) or "",
            _connector(data),
            _text(data, "reason"),
        )
    return None
