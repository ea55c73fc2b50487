"""What the parameter schema allows: who may read or write what, and which values are refused.
Pure functions over ``parameters.Family``; no I/O.

``family_of`` (which family a device has) lives in ``parameters`` now; the name stays here for
the callers that still reach it as ``schema_rules.family_of`` (the same function).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from parameters import Family, Parameter, family_of

__all__ = [
    "delta",
    "family_of",
    "may_write",
    "not_writable",
    "readable",
    "refusals",
    "same_value",
]


def readable(family: Family, roles: Iterable[str]) -> list[Parameter]:
    """The family's parameters that one of ``roles`` may read, in schema order."""
    held = frozenset(roles)
    return [p for p in family.parameters if any(p.readable_by(r) for r in held)]


def may_write(parameter: Parameter, roles: Iterable[str]) -> bool:
    """True when ``parameter`` is a setting and one of ``roles`` may write it."""
    return parameter.kind == "setting" and any(parameter.writable_by(r) for r in roles)


def refusals(family: Family, values: Mapping[str, Any]) -> dict[str, str]:
    """parameter id -> why its value is refused, for every refused entry (empty: all fine).

    Unknown ids and non-settings are refused here too, so a bulk request is judged in one pass.
    """
    refused: dict[str, str] = {}
    for parameter_id, value in values.items():
        try:
            parameter = family.parameter(parameter_id)
        except KeyError:
            refused[parameter_id] = f"no parameter {parameter_id!r} in family {family.id}"
            continue
        if parameter.kind != "setting" or parameter.value is None:
            refused[parameter_id] = f"a {parameter.kind}, not a setting"
            continue
        reason = parameter.value.reason_to_refuse(value)
        if reason is not None:
            refused[parameter_id] = reason
    return refused


def not_writable(family: Family, values: Iterable[str], roles: Iterable[str]) -> list[str]:
    """The ids among ``values`` (all in ``family``) that none of ``roles`` may write."""
    held = frozenset(roles)
    return [pid for pid in values if not may_write(family.parameter(pid), held)]


def delta(desired: Mapping[str, Any], reported: Mapping[str, Any] | None) -> dict[str, Any]:
    """Desired entries whose value the device does not report (missing counts as different).

    ``1 == 1.0 == True`` in Python; JSON keeps them apart, and so does this comparison.
    """
    reported = reported or {}
    return {
        key: value
        for key, value in desired.items()
        if key not in reported or not same_value(value, reported[key])
    }


def same_value(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: a boolean is never a number, an int never equals a float."""
    return type(a) is type(b) and a == b
