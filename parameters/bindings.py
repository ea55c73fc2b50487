"""Binding kinds: how a parameter is read from the hardware (or from an OCPP charger).

A ``BindingRegistry`` is a value: ``DEFAULT_BINDINGS.with_kind(BindingKind(...))`` adds a bus
protocol, with its own JSON sub-schema and checks, without touching the compiler or the cloud,
which only ever see ``Binding(kind, fields)``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jsonschema

from parameters.errors import Path
from parameters.schema import (
    Family,
    Node,
    Parameter,
)

# 7-bit I2C: 0x00-0x07 and 0x78-0x7F are reserved by the I2C specification (UM10204 3.1.12).
I2C_MIN, I2C_MAX = 0x08, 0x77

# What a binding check yields: a path relative to the parameter, and a message.
Finding = tuple[Path, str]


@dataclasses.dataclass(frozen=True)
class BindingContext:
    """What a binding kind's check sees: the family, the parameter and the node it lives on."""

    family: Family
    parameter: Parameter
    node: Node | None


@dataclasses.dataclass(frozen=True)
class BindingKind:
    """One source of values: its JSON sub-schema (the kind's own fields) and its checks.

    ``check`` judges one parameter; ``check_family`` sees them all (overlapping registers).
    Defaults declared in ``schema`` are filled in before the objects are built, so the compiled
    file states every field the firmware needs.
    """

    name: str
    schema: Mapping[str, Any]
    check: Callable[[BindingContext], Iterable[Finding]] | None = None
    check_family: Callable[[Family], Iterable[tuple[int, Path, str]]] | None = None
    description: str = ""

    def full_schema(self) -> dict[str, Any]:
        """The kind's schema plus the envelope every binding shares (kind, scale, offset)."""
        properties = dict(self.schema.get("properties", {}))
        properties.update(
            kind={"const": self.name}, scale={"type": "number"}, offset={"type": "number"}
        )
        closed = {"type": "object", "properties": properties, "additionalProperties": False}
        return {**self.schema, **closed}

    def defaults(self) -> dict[str, Any]:
        """Field defaults declared in the kind's schema."""
        return {
            name: spec["default"]
            for name, spec in self.schema.get("properties", {}).items()
            if "default" in spec
        }


class BindingRegistry:
    """An immutable set of binding kinds; ``with_kind`` returns an extended copy."""

    def __init__(self, kinds: Iterable[BindingKind]) -> None:
        self._kinds = types.MappingProxyType({kind.name: kind for kind in kinds})
        self._validators = {
            name: jsonschema.Draft202012Validator(kind.full_schema())
            for name, kind in self._kinds.items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[BindingKind]:
        return iter(self._kinds.values())

    def get(self, name: str) -> BindingKind | None:
        """The kind called ``name``, or None."""
        return self._kinds.get(name)

    def names(self) -> tuple[str, ...]:
        """The registered kind names, sorted."""
        return tuple(sorted(self._kinds))

    def validator(self, name: str) -> jsonschema.Draft202012Validator:
        """The compiled JSON Schema validator of one kind."""
        return self._validators[name]

    def with_kind(self, kind: BindingKind) -> BindingRegistry:
        """A new registry with ``kind`` added (or replacing the kind of the same name)."""
        return BindingRegistry([*(k for k in self if k.name != kind.name), kind])


# --- the shipped binding kinds -----------------------------------------------------------------


def _value_type(ctx: BindingContext) -> str | None:
    return ctx.parameter.value.type if ctx.parameter.value else None


def _check_i2c(ctx: BindingContext) -> Iterator[Finding]:
    binding, node = ctx.parameter.binding, ctx.node
    address = binding.get("address")
    assert isinstance(address, int)  # the sub-schema made it one
    if not I2C_MIN <= address <= I2C_MAX:
        yield ("binding", "address"), f"I2C address {address:#04x} outside 0x08-0x77"
    elif node is not None and node.i2c_address is not None and node.i2c_address != address:
        yield (
            ("binding", "address"),
            f"address {address:#04x} differs from node {node.id!r}'s {node.i2c_address:#04x}",
        )
    elif node is not None and node.is_master:
        # A sensor on the master's own bus must not collide with a slave MCU.
        for other in ctx.family.nodes:
            if other.i2c_address == address:
                yield ("binding", "address"), f"address {address:#04x} is slave {other.id!r}'s"
    width, kind = binding.get("width"), _value_type(ctx)
    if binding.get("encoding") == "ieee754" and (kind != "float" or width not in (4, 8)):
        yield ("binding", "encoding"), "ieee754 needs type float and width 4 or 8"
    if kind == "string":
        return
    if width not in (1, 2, 4, 8):
        yield ("binding", "width"), f"width {width} bytes: a register value is 1, 2, 4 or 8"
    elif kind == "bool" and width != 1:
        yield ("binding", "width"), "a bool occupies one byte"


def _i2c_overlaps(family: Family) -> Iterator[tuple[int, Path, str]]:
    seen: dict[tuple[str, Any], list[tuple[int, int, str]]] = {}
    for index, parameter in enumerate(family.parameters):
        binding = parameter.binding
        if binding.kind != "i2c":
            continue
        start = binding.get("register")
        width = binding.get("width")
        assert isinstance(start, int) and isinstance(width, int)
        key = (parameter.node, binding.get("address"))
        for other_start, other_end, other_id in seen.get(key, []):
            if start < other_end and other_start < start + width:
                message = f"registers overlap those of {other_id!r} ({other_start:#06x})"
                yield index, ("binding", "register"), message
        seen.setdefault(key, []).append((start, start + width, parameter.id))


def _check_modbus(ctx: BindingContext) -> Iterator[Finding]:
    function, kind = ctx.parameter.binding.get("function"), _value_type(ctx)
    # Modbus application protocol 6: 1/2 read coils/discrete inputs (bits), 3/4 read holding/
    # input registers; only coils (1) and holding registers (3) can be written back.
    if ctx.parameter.kind == "setting" and function not in (1, 3):
        yield ("binding", "function"), "a setting must live in coils (1) or holding registers (3)"
    if function in (1, 2) and kind != "bool":
        yield ("binding", "function"), "coils and discrete inputs hold bools only"


def _check_adc(ctx: BindingContext) -> Iterator[Finding]:
    if _value_type(ctx) not in ("int", "float"):
        yield ("type",), "an ADC reading is an int or a float"
    if ctx.parameter.kind not in ("telemetry", "status"):
        yield ("kind",), "an ADC input can only be read (telemetry or status)"


def _check_gpio(ctx: BindingContext) -> Iterator[Finding]:
    pin = ctx.parameter.binding.get("pin")
    assert isinstance(pin, int)
    # ESP32-C3 datasheet 2.3: GPIO12-17 drive the in-package SPI flash.
    if 12 <= pin <= 17:
        yield ("binding", "pin"), f"GPIO{pin} is wired to the SPI flash on the ESP32-C3"
    if ctx.parameter.kind != "command" and _value_type(ctx) != "bool":
        yield ("type",), "a GPIO pin is a bool"


def _gpio_clashes(family: Family) -> Iterator[tuple[int, Path, str]]:
    seen: dict[tuple[str, Any], str] = {}
    for index, parameter in enumerate(family.parameters):
        if parameter.binding.kind == "gpio":
            key = (parameter.node, parameter.binding.get("pin"))
            if key in seen:
                yield index, ("binding", "pin"), f"pin already used by {seen[key]!r}"
            seen.setdefault(key, parameter.id)


# OCPP 1.6 section 7.31 (Measurand); 2.0.1 keeps the same names.
OCPP_MEASURANDS = (
    "Current.Export", "Current.Import", "Current.Offered", "Energy.Active.Export.Register",
    "Energy.Active.Import.Register", "Energy.Reactive.Export.Register",
    "Energy.Reactive.Import.Register", "Energy.Active.Export.Interval",
    "Energy.Active.Import.Interval", "Energy.Reactive.Export.Interval",
    "Energy.Reactive.Import.Interval", "Frequency", "Power.Active.Export",
    "Power.Active.Import", "Power.Factor", "Power.Offered", "Power.Reactive.Export",
    "Power.Reactive.Import", "RPM", "SoC", "Temperature", "Voltage",
)  # fmt: skip
OCPP_PHASES = ("L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1")
OCPP_LOCATIONS = ("Body", "Cable", "EV", "Inlet", "Outlet")


def _check_ocpp(ctx: BindingContext) -> Iterator[Finding]:
    binding, kind = ctx.parameter.binding, ctx.parameter.kind
    measured = binding.get("measurand") is not None
    configured = any(binding.get(f) is not None for f in ("key", "component", "variable"))
    action = binding.get("action") is not None or binding.get("action_201") is not None
    if measured + configured + action != 1:
        yield ("binding",), "bind exactly one of: measurand, key/component/variable, action"
        return
    if (binding.get("component") is None) != (binding.get("variable") is None):
        yield ("binding",), "OCPP 2.0.1 configuration needs both component and variable"
    if not measured and any(binding.get(f) is not None for f in ("phase", "location")):
        yield ("binding",), "phase and location qualify a measurand"
    if measured and kind not in ("telemetry", "status"):
        yield ("binding", "measurand"), "a measurand is read-only: telemetry or status"
    if configured and kind not in ("setting", "status"):
        yield ("binding",), "a configuration key binds a setting or a status"
    if action and kind != "command":
        yield ("binding",), "an OCPP action binds a command"


def _int(minimum: int, maximum: int, **extra: Any) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


_BYTE_ORDER = {"enum": ["big", "little"], "default": "big"}
_ENCODING = {"enum": ["int", "ieee754"], "default": "int"}

DEFAULT_BINDINGS = BindingRegistry(
    [
        BindingKind(
            "i2c",
            {
                "required": ["address", "register", "width"],
                "properties": {
                    "address": {"type": "integer"},
                    "register": _int(0, 0xFFFF),
                    "width": _int(1, 64),
                    "signed": {"type": "boolean", "default": False},
                    "byte_order": _BYTE_ORDER,
                    "encoding": _ENCODING,
                },
            },
            _check_i2c,
            _i2c_overlaps,
            "A register of a slave MCU (or a sensor on the master's bus).",
        ),
        BindingKind(
            "modbus",
            {
                "required": ["unit", "function", "register"],
                "properties": {
                    "unit": _int(1, 247),
                    "function": {"enum": [1, 2, 3, 4]},
                    "register": _int(0, 0xFFFF),
                    "count": _int(1, 4, default=1),
                    "signed": {"type": "boolean", "default": False},
                    "byte_order": _BYTE_ORDER,
                    "encoding": _ENCODING,
                },
            },
            _check_modbus,
            None,
            "A Modbus RTU device on the node's RS-485 port (an external meter).",
        ),
        BindingKind(
            "adc",
            {
                "required": ["channel"],
                "properties": {
                    # ESP32-C3: ADC1 channels 0-4; ADC2 is unusable while Wi-Fi runs.
                    "channel": _int(0, 4),
                    "attenuation": {"enum": [0, 2.5, 6, 11], "default": 11},
                },
            },
            _check_adc,
        ),
        BindingKind(
            "gpio",
            {
                "required": ["pin"],
                "properties": {
                    "pin": _int(0, 21),
                    "active_low": {"type": "boolean", "default": False},
                },
            },
            _check_gpio,
            _gpio_clashes,
        ),
        BindingKind("internal", {"properties": {}}, None, None, "Kept by the node's firmware."),
        BindingKind(
            "ocpp",
            {
                "properties": {
                    "measurand": {"enum": list(OCPP_MEASURANDS)},
                    "phase": {"enum": list(OCPP_PHASES)},
                    "location": {"enum": list(OCPP_LOCATIONS)},
                    # OCPP 1.6 configuration keys are CiString50.
                    "key": {"type": "string", "minLength": 1, "maxLength": 50},
                    "component": {"type": "string", "minLength": 1, "maxLength": 50},
                    "variable": {"type": "string", "minLength": 1, "maxLength": 50},
                    "action": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
                    "action_201": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
                },
            },
            _check_ocpp,
            None,
            "A third-party charger's OCPP measurand, configuration key or action.",
        ),
    ]
)
