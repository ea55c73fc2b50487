"""Sampled values (OCPP 1.6 7.43 SampledValue, 2.0.1 2.42 SampledValueType) onto the family's
telemetry parameters, by the ``ocpp`` bindings of its schema (measurand, phase, location)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from parameters import Family

DEFAULT_MEASURAND = "Energy.Active.Import.Register"  # 1.6 7.43, 2.0.1 2.42
DEFAULT_LOCATION = "Outlet"
# Units as they come (1.6 UnitOfMeasure, 2.0.1 free strings) -> (family unit, factor, offset).
_UNITS: dict[str, tuple[str, float, float]] = {
    "Wh": ("Wh", 1, 0),
    "kWh": ("Wh", 1000, 0),
    "W": ("W", 1, 0),
    "kW": ("W", 1000, 0),
    "A": ("A", 1, 0),
    "V": ("V", 1, 0),
    "Hz": ("Hz", 1, 0),
    "Celsius": ("Cel", 1, 0),
    "Celcius": ("Cel", 1, 0),  # 1.6's schema spells it so
    "K": ("Cel", 1, -273.15),
    "Percent": ("%", 1, 0),
    "varh": ("varh", 1, 0),
    "kvarh": ("varh", 1000, 0),
    "var": ("var", 1, 0),
    "kvar": ("var", 1000, 0),
    "VA": ("VA", 1, 0),
    "kVA": ("VA", 1000, 0),
}


@functools.lru_cache(maxsize=1024)
def parse_time(text: str) -> int:
    """An OCPP dateTime (RFC 3339; a zone-less one is taken as UTC) in ms since the epoch.
    Cached: chargers sampling on the clock (1.6 ClockAlignedDataInterval, 2.0.1
    AlignedDataInterval) send the same timestamps."""
    moment = dt.datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_time(ms: int) -> str:
    """ms since the epoch as an OCPP dateTime (UTC, ``Z``)."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class Reading:
    """The family's values of one MeterValue (one timestamp), and what could not be mapped."""

    ts: int
    values: dict[str, float]
    dropped: tuple[str, ...]  # "Measurand/phase/location" of the samples left out


class MeterMap:
    """Which family parameter a sampled value is: built once per family."""

    def __init__(self, family: Family) -> None:
        self._by_key: dict[tuple[str, str | None], list[tuple[str | None, str, str | None]]] = {}
        for parameter in family.parameters:
            binding = parameter.binding
            measurand = binding.get("measurand") if binding.kind == "ocpp" else None
            if not isinstance(measurand, str) or parameter.kind not in ("telemetry", "status"):
                continue
            phase = binding.get("phase")
            location = binding.get("location")
            unit = parameter.value.unit if parameter.value is not None else None
            key = (measurand, phase if isinstance(phase, str) else None)
            self._by_key.setdefault(key, []).append(
                (location if isinstance(location, str) else None, parameter.id, unit)
            )
        self.parameters = frozenset(p.id for p in family.parameters)

    def parameter_of(
        self, measurand: str, phase: str | None, location: str | None
    ) -> tuple[str, str | None] | None:
        """(parameter id, its unit) of a sample, or None when the family has none."""
        candidates = self._by_key.get((measurand, phase))
        if candidates is None and phase in ("L1", "L2", "L3") and measurand == "Voltage":
            # Voltages are phase-to-neutral unless said otherwise (1.6 7.44 note).
            candidates = self._by_key.get((measurand, f"{phase}-N"))
        if not candidates:
            return None
        where = location or DEFAULT_LOCATION
        for wanted, parameter_id, unit in candidates:
            if wanted is None or wanted == where:
                return parameter_id, unit
        return None

    def readings(self, meter_values: Iterable[Mapping[str, Any]]) -> list[Reading]:
        """One reading per MeterValue (library payloads: snake_case keys)."""
        readings = []
        for meter_value in meter_values:
            ts = parse_time(str(meter_value["timestamp"]))
            values: dict[str, float] = {}
            dropped: list[str] = []
            for sample in meter_value.get("sampled_value", []):
                measurand = sample.get("measurand") or DEFAULT_MEASURAND
                phase, location = sample.get("phase"), sample.get("location")
                found = self.parameter_of(measurand, phase, location)
                number = _number(sample)
                if found is None or number is None:
                    dropped.append(f"{measurand}/{phase or '-'}/{location or '-'}")
                    continue
                parameter_id, unit = found
                converted = _convert(number, _unit_of(sample, measurand), unit)
                if converted is None:
                    dropped.append(f"{measurand}/{phase or '-'}/{location or '-'}")
                    continue
                values[parameter_id] = converted
            readings.append(Reading(ts, values, tuple(dropped)))
        return readings


def _number(sample: Mapping[str, Any]) -> float | None:
    value: Any = sample.get("value")
    kind = type(value)
    if kind is str:
        try:
            number = float(value)  # 1.6 sends values as strings
        except ValueError:
            return None
    elif kind is int or kind is float:
        number = float(value)
    else:  # a boolean, null, an object: not a number (2.0.1 sends JSON numbers)
        return None
    if not math.isfinite(number):
        return None
    unit_of_measure = sample.get("unit_of_measure")
    if unit_of_measure:
        multiplier = unit_of_measure.get("multiplier", 0)
        if type(multiplier) is int and multiplier:
            number *= 10.0**multiplier  # 2.0.1 UnitOfMeasureType: value x 10^multiplier
    return number


def _unit_of(sample: Mapping[str, Any], measurand: str) -> str | None:
    unit = sample.get("unit")
    if unit is None:
        unit = (sample.get("unit_of_measure") or {}).get("unit")
    if unit is None and measurand.startswith("Energy.Active"):
        return "Wh"  # the specs' default
    return unit if isinstance(unit, str) else None


def _convert(number: float, unit: str | None, wanted: str | None) -> float | None:
    if unit is None or wanted is None:
        return number  # nothing to convert with: the value is taken as in the family's unit
    known = _UNITS.get(unit)
    if known is None:
        return number if unit == wanted else None
    base, factor, offset = known
    if base != wanted:
        return None  # a Wh where W is wanted: not this parameter's quantity
    return number * factor + offset
