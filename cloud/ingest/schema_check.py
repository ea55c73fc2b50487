"""Telemetry checked against the device's hardware family (parameters/): I/O-free.

A value the family does not declare on that node, of the wrong type or outside its declared
range is *flagged*: taken out of the sample, counted by reason and kept in the dead-letter file
with the reason, while the sample's other values are stored. A flagged value is never stored as
if it were valid, and one bad sensor does not cost the charger its other readings.

Checked: the parameter exists; it is telemetry or status (settings come back through
``config/reported``, commands never as values); it sits on the sample's node; it has the declared
type; it lies within min/max and, for an enum, is one of its values. Not checked here: ``step``
(a measurement does not sit on a setting's grid) and string lengths (the contract bounds them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cloud.telemetry.store import Value
from parameters import Family, ValueSpec

#: Flag reasons, the ``reason`` label of ``ampfleet_values_flagged_total``.
UNKNOWN_PARAMETER = "unknown_parameter"
WRONG_NODE = "wrong_node"
NOT_TELEMETRY = "not_telemetry"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
REASONS = (UNKNOWN_PARAMETER, WRONG_NODE, NOT_TELEMETRY, WRONG_TYPE, OUT_OF_RANGE)

_SAMPLED_KINDS = ("telemetry", "status")
_INTEGRAL = ("int", "duration", "datetime")


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    """One value the schema refused: which, why (a reason code) and a readable detail."""

    parameter: str
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    node: str
    kind: str
    spec: ValueSpec


class TelemetryRules:
    """One family's rules, indexed by parameter id for the per-value hot path."""

    def __init__(self, family: Family) -> None:
        self.family_id = family.id
        self.schema_tag = family.schema_tag
        self._rules = {
            parameter.id: _Rule(parameter.node, parameter.kind, parameter.value)
            for parameter in family.parameters
            if parameter.value is not None
        }

    def check(self, node: str, values: Mapping[str, Value]) -> tuple[dict[str, Value], list[Flag]]:
        """The values that obey the schema, and a flag for each one that does not."""
        kept: dict[str, Value] = {}
        flags: list[Flag] = []
        for name, value in values.items():
            flag = self._flag(node, name, value)
            if flag is None:
                kept[name] = value
            else:
                flags.append(flag)
        return kept, flags

    def _flag(self, node: str, name: str, value: Value) -> Flag | None:
        rule = self._rules.get(name)
        if rule is None:
            return Flag(name, UNKNOWN_PARAMETER, f"{self.schema_tag} declares no {name}")
        if rule.kind not in _SAMPLED_KINDS:
            return Flag(name, NOT_TELEMETRY, f"{name} is a {rule.kind}, not a measured value")
        if rule.node != node:
            return Flag(name, WRONG_NODE, f"{name} belongs to node {rule.node}, not {node}")
        return _value_flag(name, rule.spec, value)


def _value_flag(name: str, spec: ValueSpec, value: Value) -> Flag | None:
    kind = spec.type
    if kind == "bool":
        return (
            None if type(value) is bool else Flag(name, WRONG_TYPE, f"{name}: expected a boolean")
        )
    if kind in ("string", "enum"):
        if type(value) is not str:
            return Flag(name, WRONG_TYPE, f"{name}: expected a string")
        if kind == "enum" and value not in spec.values:
            return Flag(
                name, OUT_OF_RANGE, f"{name}: {value!r} is not one of {', '.join(spec.values)}"
            )
        return None
    # Numbers: the decoder hands every JSON number over as a float (the stores keep one type
    # per parameter fleet-wide), so an integer parameter accepts any float with no fraction.
    if type(value) is bool or not isinstance(value, int | float):
        return Flag(name, WRONG_TYPE, f"{name}: expected a number")
    if kind in _INTEGRAL and value != int(value):
        return Flag(name, WRONG_TYPE, f"{name}: {value!r} is not an integer")
    if spec.minimum is not None and value < spec.minimum:
        return Flag(name, OUT_OF_RANGE, f"{name}: {value!r} is below the minimum {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        return Flag(name, OUT_OF_RANGE, f"{name}: {value!r} is above the maximum {spec.maximum}")
    return None
