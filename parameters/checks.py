"""The semantic rules a family must follow beyond its meta-schema, each reported with its
location (``file:line: field.path: message``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from parameters.bindings import I2C_MAX, I2C_MIN, BindingContext, BindingRegistry
from parameters.errors import Issue, Path
from parameters.loader import DURATION_UNITS, Document
from parameters.schema import (
    NUMERIC_TYPES,
    ROLES,
    Family,
    Parameter,
    ValueSpec,
)

UNITS = frozenset(
    {"W", "kW", "Wh", "kWh", "A", "mA", "V", "mV", "Hz", "Cel", "K", "s", "ms", "min", "h"}
    | {"%", "1", "dB[mW]", "var", "varh", "VA", "Ohm"}
)
DEFAULT_ROLES = ROLES  # the schema language's roles (parameters.schema.ROLES)


# --- semantic rules ----------------------------------------------------------------------------

_VALUE_FIELDS = ("type", "unit", "min", "max", "step", "values", "default", "max_length")
# Fields each value type accepts besides ``type`` and ``default``.
_TYPE_FIELDS = {
    "bool": frozenset(),
    "int": frozenset({"unit", "min", "max", "step"}),
    "float": frozenset({"unit", "min", "max", "step"}),
    "duration": frozenset({"unit", "min", "max", "step"}),
    "enum": frozenset({"values"}),
    "string": frozenset({"max_length"}),
    "datetime": frozenset(),  # always ms since the epoch (device contract "ms")
}


class _Checker:
    """Applies the semantic rules to one family; each rule appends located issues."""

    def __init__(
        self, document: Document, family: Family, roles: Collection[str], bindings: BindingRegistry
    ) -> None:
        self.document = document
        self.family = family
        self.roles = roles
        self.bindings = bindings
        self.issues: list[Issue] = []

    def report(self, path: Path, message: str) -> None:
        self.issues.append(self.document.issue(path, message))

    def run(self) -> list[Issue]:
        self.nodes()
        first_seen: dict[str, int] = {}
        raw_parameters = self.document.data["parameters"]
        for index, (raw, parameter) in enumerate(
            zip(raw_parameters, self.family.parameters, strict=True)
        ):
            path: Path = ("parameters", index)
            if parameter.id in first_seen:
                line = self.document.line(("parameters", first_seen[parameter.id]))
                self.report((*path, "id"), f"duplicate parameter id {parameter.id!r} (line {line})")
            first_seen.setdefault(parameter.id, index)
            self.parameter(raw, parameter, path)
        for kind in self.bindings:
            if kind.check_family is not None:
                for index, sub, message in kind.check_family(self.family):
                    self.report(("parameters", index, *sub), message)
        return self.issues

    def nodes(self) -> None:
        seen: dict[str, int] = {}
        addresses: dict[int, str] = {}
        for index, node in enumerate(self.family.nodes):
            path: Path = ("nodes", index)
            if node.id in seen:
                self.report((*path, "id"), f"duplicate node id {node.id!r}")
            seen.setdefault(node.id, index)
            is_master = node.id == "master"
            if is_master != (node.role == "master"):
                self.report((*path, "role"), "the node 'master', and only it, has role master")
            if is_master:
                if node.i2c_address is not None:
                    self.report((*path, "i2c_address"), "the master is the bus controller")
                continue
            address = node.i2c_address
            if address is None:
                self.report(path, f"slave {node.id!r} needs an i2c_address")
            elif not I2C_MIN <= address <= I2C_MAX:
                self.report((*path, "i2c_address"), f"I2C address {address:#04x} outside 0x08-0x77")
            elif address in addresses:
                message = f"address {address:#04x} already used by slave {addresses[address]!r}"
                self.report((*path, "i2c_address"), message)
            else:
                addresses[address] = node.id
        if "master" not in seen:
            self.report(("nodes",), "a family needs the node 'master' (device contract: node)")

    def parameter(self, raw: Mapping[str, Any], parameter: Parameter, path: Path) -> None:
        node_ids = {node.id for node in self.family.nodes}
        if parameter.node not in node_ids:
            self.report((*path, "node"), f"unknown node {parameter.node!r}")
        for field in ("read", "write"):
            for position, role in enumerate(raw.get(field, ())):
                if role not in self.roles:
                    self.report((*path, field, position), f"role {role!r} does not exist")
        self.kind_fields(raw, parameter, path)
        if parameter.value is not None:
            self.value(parameter.value, raw, path, needs_unit=True)
        for position, (arg, raw_arg) in enumerate(
            zip(parameter.args, raw.get("args", ()), strict=True)
        ):
            self.value(arg.value, raw_arg, (*path, "args", position), needs_unit=False)
        self.binding(raw, parameter, path)

    def kind_fields(self, raw: Mapping[str, Any], parameter: Parameter, path: Path) -> None:
        kind = parameter.kind

        def forbid(field: str, why: str) -> None:
            if field in raw:
                self.report((*path, field), why)

        if kind == "command":
            for field in _VALUE_FIELDS:
                forbid(field, f"a command takes args, not {field!r}")
            forbid("period", "a command is not sampled: no period")
        else:
            forbid("args", f"only commands take args, not a {kind}")
            if "type" not in raw:
                self.report(path, f"a {kind} needs a type")
        if kind != "setting":
            forbid("reboot_required", "reboot_required is for settings")
        if kind in ("telemetry", "status"):
            forbid("write", f"a {kind} parameter is read-only: no write rights")
            forbid("default", f"a {kind} has no default; only settings do")
        if kind == "telemetry" and "period" not in raw:
            self.report(path, "telemetry needs a sampling period")
        if kind == "setting":
            forbid("period", "a setting is not sampled: no period")
            if "default" not in raw:
                self.report(path, "a setting needs a default")
        if kind in ("setting", "command") and not parameter.write:
            self.report(path, f"nobody may write this {kind}: give it write rights")
        if kind != "command" and not parameter.read:
            self.report(path, f"nobody may read this {kind}: give it read rights")
        if parameter.period_ms is not None and parameter.period_ms <= 0:
            self.report((*path, "period"), "the period must be positive")

    def value(self, spec: ValueSpec, raw: Mapping[str, Any], path: Path, needs_unit: bool) -> None:
        allowed = _TYPE_FIELDS[spec.type]
        for field in ("unit", "min", "max", "step", "values", "max_length"):
            if field in raw and field not in allowed:
                self.report((*path, field), f"type {spec.type} takes no {field!r}")
        numeric = spec.type in NUMERIC_TYPES
        if numeric:
            self.numeric(spec, raw, path, needs_unit)
        if spec.type == "enum":
            if not spec.values:
                self.report((*path, "values"), "an enum needs values")
            elif len(set(spec.values)) != len(spec.values):
                self.report((*path, "values"), "enum values must be unique")
        if "default" in raw and spec.default is not None:
            self.default(spec, path)

    def numeric(
        self, spec: ValueSpec, raw: Mapping[str, Any], path: Path, needs_unit: bool
    ) -> None:
        if spec.unit is None:
            if needs_unit:
                self.report(path, f"numeric {spec.type} needs a unit ('1' when dimensionless)")
        elif spec.type == "duration" and spec.unit not in DURATION_UNITS:
            self.report((*path, "unit"), "a duration is in s or ms")
        elif spec.unit not in UNITS:
            self.report((*path, "unit"), f"unknown unit {spec.unit!r} (known: {sorted(UNITS)})")
        integral = spec.type != "float"
        for field, value in (("min", spec.minimum), ("max", spec.maximum), ("step", spec.step)):
            if value is not None and integral and value != int(value):
                self.report((*path, field), f"{field} of an {spec.type} must be whole")
        if spec.minimum is not None and spec.maximum is not None and spec.minimum > spec.maximum:
            self.report((*path, "min"), f"min {spec.minimum} is greater than max {spec.maximum}")

    def default(self, spec: ValueSpec, path: Path) -> None:
        field, value = (*path, "default"), spec.default
        reason = spec.reason_to_refuse(value)
        if reason is not None:
            self.report(field, f"default {value!r}: {reason}")

    def binding(self, raw: Mapping[str, Any], parameter: Parameter, path: Path) -> None:
        binding = parameter.binding
        kind = self.bindings.get(binding.kind)
        transformed = binding.scale != 1 or binding.offset != 0
        value_type = parameter.value.type if parameter.value else None
        if transformed and value_type not in ("int", "float", "duration"):
            self.report((*path, "binding"), "scale and offset apply to numbers only")
        elif (
            transformed
            and value_type != "float"
            and not (float(binding.scale).is_integer() and float(binding.offset).is_integer())
        ):
            self.report((*path, "binding", "scale"), "a fractional scale or offset needs a float")
        if kind is None or kind.check is None:
            return
        node = next((n for n in self.family.nodes if n.id == parameter.node), None)
        for sub, message in kind.check(BindingContext(self.family, parameter, node)):
            self.report((*path, *sub), message)
