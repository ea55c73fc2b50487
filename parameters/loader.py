"""Reading a family's YAML source: plain data with the line of every field, then typed objects.

PyYAML's composer keeps a mark on every node; walking the node tree ourselves (instead of
``yaml.safe_load``) lets each value keep its line, so an error found by the meta-schema or by a
semantic check points at ``file:line``. The walk also refuses duplicate mapping keys, which
``safe_load`` silently resolves by keeping the last one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Any

import yaml

from parameters.errors import Issue, Path
from parameters.schema import Argument, Binding, Family, Node, Parameter, ValueSpec

# "90s", "15m", "22h", "1h30m", "500ms", "1d": the durations a human writes in a schema.
_DURATION = re.compile(
    r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
_MS_PER = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# Units a duration-typed value may be declared in, as milliseconds per unit.
DURATION_UNITS = {"s": 1000, "ms": 1}


def parse_duration_ms(text: str) -> int | None:
    """``"1h30m"`` -> 5400000; None when the text is not a duration."""
    match = _DURATION.match(text)
    if match is None or not any(match.groupdict().values()):
        return None
    return sum(int(v) * _MS_PER[k] for k, v in match.groupdict().items() if v)


@dataclasses.dataclass(frozen=True)
class Document:
    """A source file as plain data (dicts, lists, scalars) plus the line of every field path."""

    file: str
    data: Any
    lines: Mapping[Path, int]

    def line(self, path: Path) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 for the root)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1

    def issue(self, path: Path, message: str) -> Issue:
        """An Issue located at ``path`` in this file."""
        return Issue(self.file, self.line(path), tuple(path), message)


class _Walker:
    """Turns a composed YAML node tree into plain data, recording lines and duplicate keys."""

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[Path, int] = {}
        self.issues: list[Issue] = []

    def walk(self, node: yaml.Node, path: Path, line: int | None = None) -> Any:
        self.lines.setdefault(path, line if line is not None else node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            # Resolves YAML merge keys (<<: *anchor) the way safe_load does.
            self.loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                key_line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    message = f"key {key!r} must be text"
                    self.issues.append(Issue(self.file, key_line, path, message))
                    continue
                if key in result:
                    message = f"duplicate key {key!r} (first at line {self.lines[(*path, key)]})"
                    self.issues.append(Issue(self.file, key_line, (*path, key), message))
                    continue
                result[key] = self.walk(value_node, (*path, key), key_line)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def load_document(file: FilePath) -> tuple[Document | None, list[Issue]]:
    """Read one YAML file; on a syntax error, return no document and the located issue."""
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Issue(name, 1, (), f"cannot read: {exc}")]
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, [Issue(name, 1, (), "empty file")]
        walker = _Walker(loader, name)
        data = walker.walk(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return None, [Issue(name, line, (), f"YAML: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, [Issue(name, 1, (), f"YAML: {exc}")]
    finally:
        loader.dispose()
    return Document(name, data, walker.lines), walker.issues


# --- plain data -> objects (the data has passed the meta-schema) -------------------------------


class _Builder:
    """Builds typed objects from validated data; durations become numbers in their unit."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.issues: list[Issue] = []

    def duration(self, raw: Any, per_unit_ms: int, path: Path) -> Any:
        """A duration written as text ("15m") in the declared unit; numbers pass unchanged."""
        if not isinstance(raw, str):
            return raw
        total = parse_duration_ms(raw)
        if total is None:
            self.issues.append(self.document.issue(path, f"{raw!r} is not a duration"))
            return None
        if total % per_unit_ms:
            message = f"{raw!r} is not a whole number of the unit ({per_unit_ms} ms)"
            self.issues.append(self.document.issue(path, message))
            return None
        return total // per_unit_ms

    def spec(self, item: Mapping[str, Any], path: Path) -> ValueSpec:
        per_unit = DURATION_UNITS.get(item.get("unit", "s"), 1000)
        fields: dict[str, Any] = {}
        for key, name in (("min", "minimum"), ("max", "maximum"), ("step", "step")):
            fields[name] = item.get(key)
        fields["default"] = item.get("default")
        if item["type"] == "duration":
            for key, name in (("min", "minimum"), ("max", "maximum"), ("step", "step")):
                fields[name] = self.duration(fields[name], per_unit, (*path, key))
            fields["default"] = self.duration(fields["default"], per_unit, (*path, "default"))
        return ValueSpec(
            type=item["type"],
            unit=item.get("unit"),
            values=tuple(item.get("values", ())),
            max_length=item.get("max_length"),
            **fields,
        )

    def period_ms(self, raw: Any, path: Path) -> int | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            millis: int | None = self.duration(raw, 1, path)
            return millis
        # A bare number is seconds, the unit the rest of the schema uses for time.
        scaled = raw * 1000
        if scaled != int(scaled):
            self.issues.append(self.document.issue(path, "period must be a whole millisecond"))
            return None
        return int(scaled)

    def parameter(self, item: Mapping[str, Any], path: Path) -> Parameter:
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
            value=self.spec(item, path) if "type" in item else None,
            read=tuple(sorted(set(item.get("read", ())))),
            write=tuple(sorted(set(item.get("write", ())))),
            period_ms=self.period_ms(item.get("period"), (*path, "period")),
            reboot_required=bool(item.get("reboot_required", False)),
            args=tuple(
                Argument(arg["id"], self.spec(arg, (*path, "args", i)), arg.get("required", False))
                for i, arg in enumerate(item.get("args", ()))
            ),
        )


def family_from_document(document: Document) -> tuple[Family, list[Issue]]:
    """Typed objects from a document that passed the meta-schema, and any conversion issues."""
    data = document.data
    builder = _Builder(document)
    family = Family(
        id=data["family"],
        name=data["name"],
        firmware=data["firmware"],
        schema_version=data["schema_version"],
        nodes=tuple(
            Node(n["id"], n["role"], n.get("i2c_address"), n.get("mcu")) for n in data["nodes"]
        ),
        parameters=tuple(
            builder.parameter(p, ("parameters", i)) for i, p in enumerate(data["parameters"])
        ),
    )
    return family, builder.issues
