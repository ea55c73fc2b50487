"""The parameter engine: a compiled family schema, register conversions, settings and sampling.

Reads ``parameters/build/<family>.json`` (the compiler's output, see parameters/README.md) with
``json`` alone — the ``parameters`` package is CPython-only — and keeps what firmware needs:

* ``Family``: nodes, parameters (``Param``) and the poll groups derived from ``period_ms``:
  per node and period, the i2c-bound parameters merged into as few register block reads as
  possible. Immutable once loaded: thousands of simulated masters share one.
* ``Param.decode``/``Param.encode``: raw register bytes <-> engineering values
  (``value = raw * scale + offset``; ``width``, ``signed``, ``byte_order``, ``encoding`` int or
  ieee754 as in parameters/bindings.py; an enum is the index of its value, a bool is non-zero,
  a string is UTF-8 padded with NULs).
* ``Param.reason_to_refuse``: the same rules and the same texts as
  ``parameters.schema.ValueSpec.reason_to_refuse``, so device and cloud refuse alike.
* ``Settings``: the values in force of a device's settings (defaults + what was applied),
  validated writes, which writes need a reboot, and their NVS form.
* ``Sampler``: when each poll group is due, the latest values, and the telemetry sample of a
  node (the ``values`` map for ``contract.encode_telemetry``).

Sampling rule: a parameter is read every ``period_ms``. Telemetry values go out with every
read; a status value goes out when it changed, and at least every heartbeat (the
``heartbeat_period_s`` setting) — a contactor state read every second need not be published
every second. A value that breaks its own schema (a glitching sensor) is left out and counted:
the cloud would flag it anyway (device contract 4.1).
"""

import json
import struct

from firmware.core.registers import to_signed

TYPE_CHECKING = False
if TYPE_CHECKING:  # the compiled JSON as the engine reads it (parameters/schema.py writes it)
    from collections.abc import Mapping
    from typing import Any, TypedDict

    from firmware.core.contract import Scalar

    class BindingItem(TypedDict, total=False):
        kind: str
        address: int
        register: int
        width: int
        signed: bool
        byte_order: str
        encoding: str
        scale: "int | float"
        offset: "int | float"

    class SpecItem(TypedDict, total=False):
        type: str
        min: "int | float"
        max: "int | float"
        step: "int | float"
        values: "list[str]"
        default: "Scalar"
        max_length: int
        id: str
        required: bool

    class ParamItem(SpecItem, total=False):
        node: str
        kind: str
        period_ms: int
        reboot_required: bool
        args: "list[SpecItem]"
        binding: BindingItem

    class NodeItem(TypedDict, total=False):
        id: str
        i2c_address: int
        role: str

    class Document(TypedDict, total=False):
        format: int
        family: str
        name: str
        schema_version: int
        schema: str
        nodes: "list[NodeItem]"
        parameters: "list[ParamItem]"


COMPILED_FORMAT = 1  # parameters/schema.py COMPILED_FORMAT: refuse a layout we do not know
KINDS = ("telemetry", "setting", "status", "command")
INTEGER_TYPES = ("int", "duration", "datetime")
BLOCK_GAP = 4  # read across a hole of up to 4 bytes rather than start another transaction
MAX_BLOCK = 64  # i2cproto.MAX_DATA
DEFAULT_HEARTBEAT_MS = 60000


class SchemaError(Exception):
    """A compiled family this engine cannot use."""


def _decimal(number: "Any") -> "tuple[int, int] | None":
    """(mantissa, exponent) with number == mantissa * 10**exponent, read from str(number) as
    decimal.Decimal(str(number)) does (MicroPython has no decimal module)."""
    text = str(number).lower()
    exponent = 0
    cut = text.find("e")
    if cut >= 0:
        try:
            exponent = int(text[cut + 1 :])
        except ValueError:
            return None
        text = text[:cut]
    cut = text.find(".")
    if cut >= 0:
        exponent -= len(text) - cut - 1
        text = text[:cut] + text[cut + 1 :]
    try:
        return int(text), exponent
    except ValueError:  # nan, inf
        return None


def on_step(value: "Any", step: "Any", origin: "Any") -> bool:
    """True when ``value`` lies on ``origin + k * step`` (exact decimal arithmetic, as the
    cloud's ``parameters.schema.on_step``: 0.3 is on the grid of step 0.1)."""
    v = _decimal(value)
    s = _decimal(step)
    o = _decimal(origin if origin is not None else 0)
    if v is None or s is None or o is None:
        return False
    low = min(v[1], s[1], o[1])  # bring all three to the finest exponent: integers
    scaled_v = v[0] * 10 ** (v[1] - low)
    scaled_s = s[0] * 10 ** (s[1] - low)
    scaled_o = o[0] * 10 ** (o[1] - low)
    return bool(scaled_s != 0 and (scaled_v - scaled_o) % scaled_s == 0)


class Spec:
    """The type and allowed values of a parameter or a command argument."""

    __slots__ = ("choices", "default", "max_length", "maximum", "minimum", "step", "type")

    def __init__(self, item: "SpecItem") -> None:
        self.type = item.get("type")
        self.minimum = item.get("min")
        self.maximum = item.get("max")
        self.step = item.get("step")
        self.choices = tuple(item.get("values", ()))
        self.default = item.get("default")
        self.max_length = item.get("max_length")

    def reason_to_refuse(self, value: "Any") -> "str | None":
        """Why ``value`` is not acceptable, or None; texts of parameters.schema.ValueSpec."""
        kind = self.type
        if kind == "bool":
            return None if type(value) is bool else "expected a boolean"
        if kind == "string" or kind == "enum":
            if type(value) is not str:
                return "expected a string"
            if kind == "enum" and value not in self.choices:
                return "not one of " + ", ".join(self.choices)
            if self.max_length is not None and len(value) > self.max_length:
                return f"longer than {self.max_length} characters"
            return None
        if type(value) is bool or not isinstance(value, (int, float)):
            return "expected a number"
        if kind in INTEGER_TYPES and type(value) is not int:
            return "expected an integer"
        if self.minimum is not None and value < self.minimum:
            return "below the minimum " + str(self.minimum)
        if self.maximum is not None and value > self.maximum:
            return "above the maximum " + str(self.maximum)
        if self.step is not None and not on_step(value, self.step, self.minimum):
            return "not a multiple of the step " + str(self.step)
        return None


class Arg(Spec):
    """One argument of a command."""

    __slots__ = ("id", "required")

    def __init__(self, item: "SpecItem") -> None:
        super().__init__(item)
        self.id = item["id"]
        self.required = bool(item.get("required", False))


class Param(Spec):
    """One parameter of the family, with its binding flattened into attributes."""

    __slots__ = (
        "address",
        "args",
        "bus",
        "digits",
        "id",
        "ieee754",
        "kind",
        "little",
        "node",
        "offset",
        "period_ms",
        "reboot_required",
        "register",
        "scale",
        "signed",
        "width",
    )

    def __init__(self, item: "ParamItem") -> None:
        super().__init__(item)
        self.id = item["id"]
        self.node = item["node"]
        self.kind = item["kind"]
        if self.kind not in KINDS:
            raise SchemaError("parameter " + self.id + ": unknown kind " + str(self.kind))
        self.period_ms = item.get("period_ms")
        self.reboot_required = bool(item.get("reboot_required", False))
        self.args = tuple(Arg(arg) for arg in item.get("args", ()))
        binding = item.get("binding", {})
        self.bus = binding.get("kind", "internal")
        self.address = binding.get("address")
        self.register = binding.get("register")
        self.width = binding.get("width", 1)
        self.signed = bool(binding.get("signed", False))
        self.little = binding.get("byte_order", "big") == "little"
        self.ieee754 = binding.get("encoding", "int") == "ieee754"
        self.scale = binding.get("scale", 1)
        self.offset = binding.get("offset", 0)
        # 0.1 * 73605 is 7360.500000000001: round to the decimals the scale and offset carry.
        digits = 0
        for number in (self.scale, self.offset):
            parts = _decimal(number)
            if parts is not None and parts[1] < 0:
                digits = max(digits, -parts[1])
        self.digits = digits

    @property
    def on_i2c(self) -> bool:
        """True when the value lives in a register of an I2C slave (or sensor)."""
        return self.bus == "i2c"

    def decode(self, data: "Any", start: int = 0) -> "Any":
        """The engineering value of the register bytes at ``data[start:]``; None if invalid."""
        width = self.width
        chunk = bytes(data[start : start + width])
        if len(chunk) != width:
            return None
        kind = self.type
        if kind == "string":
            try:
                return chunk.split(b"\0")[0].decode("utf-8")
            except UnicodeError:
                return None
        if self.ieee754:
            raw = struct.unpack(
                ("<" if self.little else ">") + ("f" if width == 4 else "d"), chunk
            )[0]
        else:
            raw = int.from_bytes(chunk, "little") if self.little else int.from_bytes(chunk, "big")
            if self.signed:
                raw = to_signed(raw, width)
        if kind == "bool":
            return raw != 0
        if kind == "enum":
            return self.choices[raw] if type(raw) is int and 0 <= raw < len(self.choices) else None
        value = raw
        if self.scale != 1 or self.offset != 0:
            value = raw * self.scale + self.offset
        if kind in INTEGER_TYPES:
            return round(value)
        value = float(value)
        return round(value, self.digits) if self.digits else value

    def encode(self, value: "Any") -> bytes:
        """Register bytes for ``value`` (the inverse of ``decode``); ValueError when it does not
        fit the register."""
        width = self.width
        if self.type == "string":
            data = value.encode("utf-8")  # type: bytes
            if len(data) > width:
                raise ValueError(self.id + ": longer than its register")
            return data + bytes(width - len(data))
        if self.type == "bool":
            raw = 1 if value else 0
        elif self.type == "enum":
            raw = self.choices.index(value)
        elif self.scale != 1 or self.offset != 0:
            raw = (value - self.offset) / self.scale
        else:
            raw = value
        if self.ieee754:
            return struct.pack(("<" if self.little else ">") + ("f" if width == 4 else "d"), raw)
        raw = round(raw)
        bits = width * 8
        low, high = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)
        )
        if raw < low or raw > high:
            raise ValueError(self.id + ": " + str(value) + " does not fit its register")
        return (raw & ((1 << bits) - 1)).to_bytes(width, "little" if self.little else "big")


class Block:
    """One register block read: ``length`` bytes from ``register`` of ``address``."""

    __slots__ = ("address", "length", "params", "register")

    def __init__(
        self, address: int, register: int, length: int, params: "tuple[Param, ...]"
    ) -> None:
        self.address = address
        self.register = register
        self.length = length
        self.params = params


class PollGroup:
    """The parameters of one node read every ``period_ms``, and the blocks that read them."""

    __slots__ = ("blocks", "node", "params", "period_ms")

    def __init__(
        self,
        node: str,
        period_ms: int,
        params: "tuple[Param, ...]",
        blocks: "tuple[Block, ...]",
    ) -> None:
        self.node = node
        self.period_ms = period_ms
        self.params = params
        self.blocks = blocks


def _register(param: Param) -> int:
    """The register of an i2c-bound parameter (the compiler gives every i2c binding one)."""
    register = param.register
    if register is None:
        raise SchemaError("parameter " + param.id + ": no register in its i2c binding")
    return register


def _address(param: Param) -> int:
    """The I2C address of an i2c-bound parameter (the compiler gives every i2c binding one)."""
    address = param.address
    if address is None:
        raise SchemaError("parameter " + param.id + ": no address in its i2c binding")
    return address


def plan_blocks(params: "list[Param]") -> "tuple[Block, ...]":
    """Merge i2c parameters (one address) into register blocks of at most MAX_BLOCK bytes."""
    blocks = []
    current = []  # type: list[Param]
    start = end = 0
    for param in sorted(params, key=_register):
        register = _register(param)
        stop = register + param.width
        if current and (register > end + BLOCK_GAP or stop - start > MAX_BLOCK):
            blocks.append(Block(_address(current[0]), start, end - start, tuple(current)))
            current = []
        if not current:
            start = register
            end = stop
        current.append(param)
        end = max(end, stop)
    if current:
        blocks.append(Block(_address(current[0]), start, end - start, tuple(current)))
    return tuple(blocks)


class Family:
    """One hardware family as compiled: nodes, parameters and poll groups."""

    __slots__ = ("groups", "id", "name", "nodes", "order", "params", "schema", "schema_version")

    def __init__(self, document: "Document") -> None:
        if document.get("format") != COMPILED_FORMAT:
            raise SchemaError("unknown compiled format " + repr(document.get("format")))
        try:
            self.id = document["family"]
            self.name = document.get("name", self.id)
            self.schema_version = document["schema_version"]
            self.schema = document.get("schema") or self.id + "." + str(self.schema_version)
            self.nodes = tuple(
                (node["id"], node.get("i2c_address"), node.get("role", node["id"]))
                for node in document["nodes"]
            )
            self.order = tuple(Param(item) for item in document["parameters"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise SchemaError("not a compiled parameter schema: " + repr(exc)) from None
        self.params = {param.id: param for param in self.order}
        self.groups = self._plan()

    def _plan(self) -> "tuple[PollGroup, ...]":
        groups = []
        for node, address, _ in self.nodes:
            periods = {}  # type: dict[int, list[Param]]
            for param in self.order:
                if param.node != node or not param.period_ms or param.kind == "command":
                    continue
                # A slave's values come over I2C; the master's own ("internal") from its
                # firmware. Other buses (modbus, adc, gpio on a slave) are read by that slave.
                if address is not None and not param.on_i2c:
                    continue
                if address is None and param.bus != "internal":
                    continue
                periods.setdefault(param.period_ms, []).append(param)
            for period in sorted(periods):
                members = periods[period]
                blocks = plan_blocks(members) if address is not None else ()
                groups.append(PollGroup(node, period, tuple(members), blocks))
        return tuple(groups)

    def parameter(self, parameter_id: str) -> Param:
        """The parameter with this id; KeyError when the family has none."""
        return self.params[parameter_id]

    def address_of(self, node_id: str) -> "int | None":
        """The I2C address of a slave node, None for the master; KeyError for an unknown node."""
        for node, address, _ in self.nodes:
            if node == node_id:
                return address
        raise KeyError(node_id)

    def slaves(self) -> "list[tuple[str, int | None, str]]":
        """(node id, address, role) of every slave node, in schema order."""
        return [node for node in self.nodes if node[1] is not None]

    def node_of_role(self, role: str) -> "str | None":
        """The first node with this role (``meter``, ``relay``), or None."""
        for node, _, node_role in self.nodes:
            if node_role == role:
                return node
        return None

    def settings(self) -> "list[Param]":
        """The setting parameters, in schema order."""
        return [param for param in self.order if param.kind == "setting"]

    def register_map(self, node_id: str) -> "list[Param]":
        """The i2c-bound parameters of a slave node, by register: what that slave serves."""
        members = [p for p in self.order if p.node == node_id and p.on_i2c]
        return sorted(members, key=_register)

    def write_refusal(self, parameter_id: str, value: "Any") -> "str | None":
        """Why a write of ``value`` to a setting is refused (cloud's schema_rules texts)."""
        param = self.params.get(parameter_id)
        if param is None:
            return "no parameter " + repr(parameter_id) + " in family " + self.id
        if param.kind != "setting" or param.type is None:
            return "a " + param.kind + ", not a setting"
        return param.reason_to_refuse(value)

    def command_refusal(
        self, name: str, args: "Mapping[str, object]"
    ) -> "tuple[str, dict[str, str] | None] | None":
        """None when the family has command ``name`` and ``args`` fit it; else
        ("unknown_command", None) or ("bad_args", {argument: reason})."""
        param = self.params.get(name)
        if param is None or param.kind != "command":
            return "unknown_command", None
        problems = {}
        known = set()
        for arg in param.args:
            known.add(arg.id)
            if arg.id not in args:
                if arg.required:
                    problems[arg.id] = "required"
                continue
            reason = arg.reason_to_refuse(args[arg.id])
            if reason is not None:
                problems[arg.id] = reason
        for key in args:
            if key not in known:
                problems[key] = "unknown argument"
        return ("bad_args", problems) if problems else None


def load(data: "bytes | str") -> Family:
    """A Family from the bytes (or text) of a compiled ``<family>.json``."""
    try:
        document = json.loads(data)  # type: Document
    except ValueError:
        raise SchemaError("compiled schema is not JSON") from None
    if type(document) is not dict:
        raise SchemaError("compiled schema is not a JSON object")
    return Family(document)


def load_file(path: str) -> Family:
    """A Family from a compiled file on the filesystem."""
    with open(path, "rb") as handle:
        return load(handle.read())


def same_value(a: "Any", b: "Any") -> bool:
    """Equality as JSON sees it: True is not 1, 16 is not 16.0 (cloud's schema_rules too)."""
    return type(a) is type(b) and a == b


class Settings:
    """The settings in force on one device: schema defaults, overridden by applied values."""

    __slots__ = ("family", "overrides", "version")

    def __init__(self, family: Family) -> None:
        self.family = family
        self.overrides = {}  # type: dict[str, object]  # only values that differ from the default
        self.version = 0  # version of the last config/desired applied

    def get(self, parameter_id: str) -> "Any":
        """The value in force of a setting; KeyError for an unknown id."""
        if parameter_id in self.overrides:
            return self.overrides[parameter_id]
        return self.family.params[parameter_id].default

    def in_force(self) -> "dict[str, object]":
        """Every setting's value in force (the ``values`` of config/reported)."""
        return {param.id: self.get(param.id) for param in self.family.settings()}

    def apply(self, values: "Mapping[str, object]") -> "tuple[dict[str, str], list[str], bool]":
        """Apply a desired set: (refused {id: reason}, changed [ids], reboot needed).

        Valid values are applied, refused ones leave the value in force as it was (device
        contract 4.4, step 2); ids missing from ``values`` keep theirs.
        """
        refused = {}
        changed = []
        reboot = False
        family = self.family
        for parameter_id in values:
            value = values[parameter_id]
            reason = family.write_refusal(parameter_id, value)
            if reason is not None:
                refused[parameter_id] = reason
                continue
            if same_value(self.get(parameter_id), value):
                continue
            param = family.params[parameter_id]
            if same_value(param.default, value):
                self.overrides.pop(parameter_id, None)
            else:
                self.overrides[parameter_id] = value
            changed.append(parameter_id)
            reboot = reboot or param.reboot_required
        return refused, changed, reboot

    def dump(self) -> bytes:
        """The NVS record: version and overrides, as JSON."""
        return json.dumps({"version": self.version, "values": self.overrides}).encode()

    def restore(self, data: "bytes | None") -> None:
        """Load an NVS record written by ``dump``; values the schema now refuses are dropped
        (an OTA may have brought a stricter schema)."""
        if not data:
            return
        try:
            record = json.loads(data)
            version = record["version"]
            values = record["values"]
        except (ValueError, KeyError, TypeError):
            return  # a torn write: start from the defaults rather than crash at every boot
        self.overrides = {}
        self.apply(values)
        self.version = version if type(version) is int else 0


class Sampler:
    """One device's sampling state: when each poll group is due and the latest values."""

    __slots__ = ("beat", "due_ms", "family", "flagged", "published", "values")

    def __init__(self, family: Family, now_ms: int, rand: "Any" = None) -> None:
        self.family = family
        # A spread first read: a fleet that boots together does not sample together.
        self.due_ms = [
            now_ms + (int(rand() * group.period_ms) if rand is not None else 0)
            for group in family.groups
        ]
        self.values = {}  # type: dict[str, Scalar]  # parameter id -> latest valid value
        self.published = {}  # type: dict[str, Scalar]  # status id -> value last published
        # node -> when its status values were all last published
        self.beat = {}  # type: dict[str, int]
        self.flagged = 0  # values left out because they broke their own schema

    def due(self, now_ms: int) -> "list[PollGroup]":
        """The poll groups due at ``now_ms``; each is scheduled one period later."""
        groups = []
        family_groups = self.family.groups
        for index in range(len(family_groups)):
            if now_ms >= self.due_ms[index]:
                group = family_groups[index]
                groups.append(group)
                following = self.due_ms[index] + group.period_ms
                # After a long gap (a blocking OTA write, a stalled host) skip, don't burst.
                self.due_ms[index] = following if following > now_ms else now_ms + group.period_ms
        return groups

    def next_due_ms(self) -> int:
        """When the next group falls due (the run loop may sleep until then)."""
        return min(self.due_ms) if self.due_ms else 0

    def store(self, block: Block, data: "Any") -> None:
        """Decode a block read and keep each valid value."""
        for param in block.params:
            self.put(param, param.decode(data, _register(param) - block.register))

    def number(self, parameter_id: str) -> "int | float | None":
        """The latest valid value of a numeric parameter; None before the first one."""
        value = self.values.get(parameter_id)
        return value if type(value) is int or type(value) is float else None

    def put(self, param: Param, value: "Any") -> None:
        """Keep one value (master-internal ones come from the firmware itself)."""
        if value is None or param.reason_to_refuse(value) is not None:
            self.flagged += 1
            self.values.pop(param.id, None)
            return
        self.values[param.id] = value

    def forget(self, node: str) -> None:
        """Drop a node's values: its slave stopped answering, they are no longer true."""
        for param in self.family.order:
            if param.node == node:
                self.values.pop(param.id, None)
                self.published.pop(param.id, None)

    def collect(
        self, groups: "list[PollGroup]", now_ms: int, heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    ) -> "list[tuple[str, dict[str, Scalar]]]":
        """The samples of the groups just read: [(node, values)], one per node, in schema order.

        All values of a node go into one sample, since the cloud keeps one sample per (device,
        node, ts) (device contract 7).
        """
        samples = []
        for node, _, _ in self.family.nodes:
            members = [group for group in groups if group.node == node]
            if not members:
                continue
            # The heartbeat is due when this node's status values are among those just read.
            beat = now_ms - self.beat.get(node, -heartbeat_ms) >= heartbeat_ms and any(
                param.kind == "status" for group in members for param in group.params
            )
            values = {}
            for group in members:
                for param in group.params:
                    if param.id not in self.values:
                        continue
                    value = self.values[param.id]
                    if param.kind == "status":
                        if not beat and same_value(self.published.get(param.id), value):
                            continue
                        self.published[param.id] = value
                    values[param.id] = value
            if beat:
                self.beat[node] = now_ms
            if values:
                samples.append((node, values))
        return samples
