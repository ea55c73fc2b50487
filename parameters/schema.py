"""The typed, frozen objects a parameter schema compiles to, and their compact JSON form.

A ``Family`` is one hardware family (``ac22-3p``): its MCUs (``Node``) and every parameter
(``Parameter``) its firmware implements. Everything downstream — the ingest's value checks, remote
configuration, command authorization, generated dashboards, the firmware's register map — reads
these objects, never the YAML. ``to_compiled``/``from_compiled`` convert them to and from the
compact JSON that ``ampfleet parameters build`` writes; both are pure (no I/O).
"""

from __future__ import annotations

import dataclasses
import decimal
import hashlib
import json
import types
from collections.abc import Mapping
from typing import Any, Literal, cast

from parameters.errors import CompiledFormatError

Scalar = bool | int | float | str
Kind = Literal["telemetry", "setting", "status", "command"]
ValueType = Literal["bool", "int", "float", "enum", "string", "duration", "datetime"]

KINDS: tuple[Kind, ...] = ("telemetry", "setting", "status", "command")
VALUE_TYPES: tuple[ValueType, ...] = (
    "bool",
    "int",
    "float",
    "enum",
    "string",
    "duration",
    "datetime",
)
NUMERIC_TYPES = frozenset({"int", "float", "duration"})

# The roles a parameter's ``read`` and ``write`` lists may name. They are part of the schema
# language, so they are declared here, below the cloud; the cloud seeds exactly these roles
# (cloud.identity.permissions.SYSTEM_ROLES, held equal by tests/parameters/test_roles.py).
ROLES = frozenset(
    {
        "platform-admin",
        "organization-admin",
        "operator",
        "support",
        "installer",
        "owner",
        "guest",
        "monitoring",
        # The test station on the production line (reads and writes what calibration needs).
        "factory-station",
    }
)

# Version of the compiled JSON layout itself (not of a family's content): a loader refuses a
# layout it does not know instead of misreading it.
COMPILED_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Node:
    """One MCU of a charger: the master (talks MQTT) or a slave on the master's I2C bus."""

    id: str
    role: str
    i2c_address: int | None = None
    mcu: str | None = None

    @property
    def is_master(self) -> bool:
        """True for the node that talks to the cloud."""
        return self.i2c_address is None


@dataclasses.dataclass(frozen=True)
class Binding:
    """Where a value comes from: a binding kind (``i2c``, ``modbus``, ``ocpp``...) and its fields.

    Fields stay a generic read-only mapping on purpose: a new bus protocol is a new entry in the
    compiler's binding registry, and nothing that consumes ``Binding`` has to change.
    Engineering value = raw * ``scale`` + ``offset``.
    """

    kind: str
    fields: Mapping[str, Scalar] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    scale: int | float = 1
    offset: int | float = 0

    def __post_init__(self) -> None:
        # Freeze the mapping so a shared Binding cannot be changed behind its users' backs.
        frozen = types.MappingProxyType(dict(sorted(self.fields.items())))
        object.__setattr__(self, "fields", frozen)

    def get(self, name: str, default: Scalar | None = None) -> Scalar | None:
        """One binding field (``address``, ``register``...) or ``default``."""
        return self.fields.get(name, default)


@dataclasses.dataclass(frozen=True)
class ValueSpec:
    """The type and allowed values of a parameter or a command argument."""

    type: ValueType
    unit: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    step: int | float | None = None
    values: tuple[str, ...] = ()
    default: Scalar | None = None
    max_length: int | None = None

    def reason_to_refuse(self, value: object) -> str | None:
        """Why ``value`` is not acceptable for this spec, or None when it is."""
        if self.type == "bool":
            return None if isinstance(value, bool) else "expected a boolean"
        if self.type in ("string", "enum"):
            if not isinstance(value, str):
                return "expected a string"
            if self.type == "enum" and value not in self.values:
                return "not one of " + ", ".join(self.values)
            if self.max_length is not None and len(value) > self.max_length:
                return f"longer than {self.max_length} characters"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if self.type in ("int", "duration", "datetime") and not isinstance(value, int):
            return "expected an integer"
        if self.minimum is not None and value < self.minimum:
            return f"below the minimum {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"above the maximum {self.maximum}"
        if self.step is not None and not on_step(value, self.step, self.minimum):
            return f"not a multiple of the step {self.step}"
        return None


def on_step(value: int | float, step: int | float, origin: int | float | None) -> bool:
    """True when ``value`` lies on the grid ``origin + k * step`` (decimal, so 0.1 steps work)."""
    base = decimal.Decimal(str(origin if origin is not None else 0))
    offset = decimal.Decimal(str(value)) - base
    return offset % decimal.Decimal(str(step)) == 0


@dataclasses.dataclass(frozen=True)
class Argument:
    """One argument of a command (``charging.start`` takes ``connector``)."""

    id: str
    value: ValueSpec
    required: bool = False


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One declared entity: a telemetry value, a setting, a status or a command."""

    id: str
    node: str
    kind: Kind
    binding: Binding
    label: str | None = None
    # None only for commands: they carry their inputs as ``args``.
    value: ValueSpec | None = None
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    period_ms: int | None = None
    reboot_required: bool = False
    args: tuple[Argument, ...] = ()

    def readable_by(self, role: str) -> bool:
        """True when ``role`` may read this parameter."""
        return role in self.read

    def writable_by(self, role: str) -> bool:
        """True when ``role`` may change this setting or send this command."""
        return role in self.write


@dataclasses.dataclass(frozen=True)
class Family:
    """One hardware family: its nodes and parameters, at one schema version."""

    id: str
    name: str
    firmware: str
    schema_version: int
    nodes: tuple[Node, ...]
    parameters: tuple[Parameter, ...]

    @property
    def schema_tag(self) -> str:
        """What firmware announces in ``status.schema`` (device contract 4.2): ``ac22-3p.3``."""
        return f"{self.id}.{self.schema_version}"

    def parameter(self, parameter_id: str) -> Parameter:
        """The parameter with this id; KeyError when the family has none."""
        for parameter in self.parameters:
            if parameter.id == parameter_id:
                return parameter
        raise KeyError(parameter_id)

    def node(self, node_id: str) -> Node:
        """The node with this id; KeyError when the family has none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


@dataclasses.dataclass(frozen=True)
class CompiledFamily:
    """A family as built: the objects plus the hash of their canonical content."""

    family: Family
    sha256: str


# --- compact JSON ------------------------------------------------------------------------------


def _spec_json(spec: ValueSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": spec.type}
    for key, value in (
        ("unit", spec.unit),
        ("min", spec.minimum),
        ("max", spec.maximum),
        ("step", spec.step),
        ("default", spec.default),
        ("max_length", spec.max_length),
    ):
        if value is not None:
            out[key] = value
    if spec.values:
        out["values"] = list(spec.values)
    return out


def _parameter_json(parameter: Parameter) -> dict[str, Any]:
    out: dict[str, Any] = {"id": parameter.id, "node": parameter.node, "kind": parameter.kind}
    if parameter.value is not None:
        out.update(_spec_json(parameter.value))
    binding: dict[str, Any] = {"kind": parameter.binding.kind, **parameter.binding.fields}
    # Omitting the identity transform keeps the file small on the ESP32-C3.
    if parameter.binding.scale != 1:
        binding["scale"] = parameter.binding.scale
    if parameter.binding.offset != 0:
        binding["offset"] = parameter.binding.offset
    out["binding"] = binding
    if parameter.label is not None:
        out["label"] = parameter.label
    if parameter.read:
        out["read"] = list(parameter.read)
    if parameter.write:
        out["write"] = list(parameter.write)
    if parameter.period_ms is not None:
        out["period_ms"] = parameter.period_ms
    if parameter.reboot_required:
        out["reboot_required"] = True
    if parameter.args:
        out["args"] = [
            {"id": arg.id, **_spec_json(arg.value), **({"required": True} if arg.required else {})}
            for arg in parameter.args
        ]
    return out


def content_json(family: Family) -> dict[str, Any]:
    """The canonical content of a family: everything but its version (which is what is hashed)."""
    nodes = []
    for node in family.nodes:
        item: dict[str, Any] = {"id": node.id, "role": node.role}
        if node.i2c_address is not None:
            item["i2c_address"] = node.i2c_address
        if node.mcu is not None:
            item["mcu"] = node.mcu
        nodes.append(item)
    return {
        "family": family.id,
        "name": family.name,
        "firmware": family.firmware,
        "nodes": nodes,
        "parameters": [_parameter_json(p) for p in family.parameters],
    }


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """Minified JSON with sorted keys: the same objects always give the same bytes."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def content_hash(family: Family) -> str:
    """SHA-256 (hex) of the canonical content, which leaves out ``schema_version``."""
    return hashlib.sha256(canonical_bytes(content_json(family))).hexdigest()


def to_compiled(family: Family) -> bytes:
    """The compiled file of a family: compact JSON with its schema version and content hash."""
    document = content_json(family)
    document.update(
        format=COMPILED_FORMAT,
        schema_version=family.schema_version,
        schema=family.schema_tag,
        sha256=content_hash(family),
    )
    return canonical_bytes(document) + b"\n"


def _spec_from(item: Mapping[str, Any]) -> ValueSpec:
    return ValueSpec(
        type=item["type"],
        unit=item.get("unit"),
        minimum=item.get("min"),
        maximum=item.get("max"),
        step=item.get("step"),
        values=tuple(item.get("values", ())),
        default=item.get("default"),
        max_length=item.get("max_length"),
    )


def _parameter_from(item: Mapping[str, Any]) -> Parameter:
    binding = dict(item["binding"])
    kind = binding.pop("kind")
    scale = binding.pop("scale", 1)
    offset = binding.pop("offset", 0)
    return Parameter(
        id=item["id"],
        node=item["node"],
        kind=item["kind"],
        binding=Binding(kind, binding, scale, offset),
        label=item.get("label"),
        value=_spec_from(item) if "type" in item else None,
        read=tuple(item.get("read", ())),
        write=tuple(item.get("write", ())),
        period_ms=item.get("period_ms"),
        reboot_required=bool(item.get("reboot_required", False)),
        args=tuple(
            Argument(arg["id"], _spec_from(arg), bool(arg.get("required", False)))
            for arg in item.get("args", ())
        ),
    )


def from_compiled(data: bytes) -> CompiledFamily:
    """Parse a compiled file back into objects, checking its layout version and its hash."""
    try:
        document = json.loads(data)
        if document.get("format") != COMPILED_FORMAT:
            raise CompiledFormatError(f"unknown compiled format {document.get('format')!r}")
        family = Family(
            id=document["family"],
            name=document["name"],
            firmware=document["firmware"],
            schema_version=document["schema_version"],
            nodes=tuple(
                Node(n["id"], n["role"], n.get("i2c_address"), n.get("mcu"))
                for n in document["nodes"]
            ),
            parameters=tuple(_parameter_from(p) for p in document["parameters"]),
        )
        stated = cast(str, document["sha256"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CompiledFormatError(f"not a compiled parameter schema: {exc!r}") from exc
    actual = content_hash(family)
    if actual != stated:
        raise CompiledFormatError(f"content hash {actual} differs from the recorded {stated}")
    return CompiledFamily(family, stated)
