"""What the parameter schema allows: which family a device has, who may read or write what, and
which values are refused. Pure functions over ``parameters.Family``; no I/O but the family load.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import parameters
from cloud.configuration import UnknownFamilyError
from parameters import Family, Parameter

# Family ids are file names (parameters/build/<id>.json): nothing that could leave the directory.
_FAMILY_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@functools.lru_cache(maxsize=64)
def _load(family_id: str) -> Family:
    return parameters.load_family(family_id)


def family_of(family_id: str) -> Family:
    """The shipped family ``family_id``; UnknownFamilyError when there is none.

    Cached: the compiled files change with a deployment, not while the process runs.
    """
    if not _FAMILY_ID.match(family_id) or ".." in family_id:
        raise UnknownFamilyError(family_id)
    try:
        return _load(family_id)
    except (parameters.ParameterSchemaError, OSError, KeyError, ValueError) as exc:
        raise UnknownFamilyError(family_id) from exc


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
