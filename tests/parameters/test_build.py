"""Building: deterministic bytes, version tracking, and the compiled form read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import parameters
from parameters.bindings import DEFAULT_BINDINGS, BindingContext, BindingKind
from parameters.compiler import build, check_paths, compile_family
from parameters.errors import CompiledFormatError, InvalidSchemaError
from parameters.schema import ValueSpec, from_compiled, to_compiled
from tests.parameters import VALID, line_of, write_family


def test_build_is_deterministic(tmp_path: Path) -> None:
    source = write_family(tmp_path, VALID)
    first = build([source], tmp_path / "a")[0].path.read_bytes()
    second = build([source], tmp_path / "b")[0].path.read_bytes()
    again = build([source], tmp_path / "a")[0].path.read_bytes()  # over its own output
    assert first == second == again


def test_build_is_minified_with_version_and_hash(tmp_path: Path) -> None:
    (built,) = build([write_family(tmp_path, VALID)], tmp_path / "out")
    data = built.path.read_bytes()
    assert built.path.name == "demo.json" and built.size == len(data)
    assert b" " not in data.replace(b"Demo charger", b"").replace(b">=1.0.0 <2.0.0", b"")
    document = json.loads(data)
    assert list(document) == sorted(document)
    assert document["schema_version"] == 1 and document["schema"] == "demo.1"
    assert len(document["sha256"]) == 64 and document["sha256"] == built.sha256


def test_refused_build_writes_nothing(tmp_path: Path) -> None:
    source = write_family(tmp_path, VALID.replace("min: 6", "min: 60"))
    with pytest.raises(InvalidSchemaError):
        build([source], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_change_without_version_bump_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = write_family(tmp_path, VALID)
    build([source], out)
    before = (out / "demo.json").read_bytes()
    changed = VALID.replace("max: 32", "max: 40")
    write_family(tmp_path, changed)
    with pytest.raises(InvalidSchemaError) as raised:
        build([source], out)
    (issue,) = raised.value.issues
    assert issue.line == line_of(changed, "schema_version: 1")
    assert "bump schema_version" in str(issue) and "schema_version:" in str(issue)
    assert (out / "demo.json").read_bytes() == before  # the previous build stays
    # check sees it too, given the build directory
    assert not check_paths([source], previous=out).ok
    assert check_paths([source]).ok  # and without a previous build there is nothing to compare

    bumped = changed.replace("schema_version: 1", "schema_version: 2")
    write_family(tmp_path, bumped)
    (built,) = build([source], out)
    assert built.schema_version == 2 and json.loads(built.path.read_bytes())["schema"] == "demo.2"


def test_version_going_back_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    source = write_family(tmp_path, VALID.replace("schema_version: 1", "schema_version: 5"))
    build([source], out)
    write_family(tmp_path, VALID.replace("schema_version: 1", "schema_version: 4"))
    with pytest.raises(InvalidSchemaError, match="lower than the built 5"):
        build([source], out)


def test_unchanged_rebuild_needs_no_bump(tmp_path: Path) -> None:
    source = write_family(tmp_path, VALID)
    build([source], tmp_path / "out")
    assert build([source], tmp_path / "out")[0].schema_version == 1


def test_load_compiled_round_trip(tmp_path: Path) -> None:
    source = write_family(tmp_path, VALID)
    (built,) = build([source], tmp_path / "out")
    loaded = parameters.load_compiled(built.path)
    assert loaded == compile_family("demo", tmp_path)
    assert to_compiled(loaded) == built.path.read_bytes()
    power = loaded.parameter("power_w")
    assert power.binding.kind == "i2c" and power.binding.get("address") == 0x20
    assert power.binding.get("byte_order") == "big"  # the kind's default, written out
    assert power.binding.scale == 0.1 and power.period_ms == 10_000
    assert loaded.parameter("max_current_a").writable_by("installer")
    assert not loaded.parameter("max_current_a").writable_by("owner")


def test_shipped_families_round_trip(tmp_path: Path) -> None:
    for built in build([parameters.FAMILIES_DIR], tmp_path):
        family = parameters.load_compiled(built.path)
        assert family == compile_family(built.family)
        assert to_compiled(family) == built.path.read_bytes()


def test_load_family_prefers_the_build_and_falls_back_to_source(tmp_path: Path) -> None:
    source_dir = tmp_path / "src"
    source_dir.mkdir()
    write_family(source_dir, VALID)
    empty = tmp_path / "none"
    assert parameters.load_family("demo", empty, source_dir).schema_version == 1
    build([source_dir], tmp_path / "out")
    write_family(source_dir, VALID.replace("schema_version: 1", "schema_version: 9"))
    assert parameters.load_family("demo", tmp_path / "out", source_dir).schema_version == 1


def test_tampered_compiled_file_is_refused(tmp_path: Path) -> None:
    (built,) = build([write_family(tmp_path, VALID)], tmp_path / "out")
    data = built.path.read_bytes().replace(b'"max":32', b'"max":99')
    with pytest.raises(CompiledFormatError, match="content hash"):
        from_compiled(data)
    with pytest.raises(CompiledFormatError):
        from_compiled(b"[1, 2]")
    with pytest.raises(CompiledFormatError):
        parameters.load_compiled(tmp_path / "missing.json")


def test_durations_compile_to_numbers_in_their_unit(tmp_path: Path) -> None:
    text = VALID.replace(
        "  - id: reboot",
        """\
  - id: window_start_s
    node: master
    kind: setting
    type: duration
    unit: s
    min: 0s
    max: 23h45m
    step: 15m
    default: 22h
    read: [owner]
    write: [owner]
    binding: {kind: internal}
  - id: reboot""",
    )
    family = compile_family("demo", write_family(tmp_path, text).parent)
    spec = family.parameter("window_start_s").value
    assert spec == ValueSpec("duration", "s", 0, 85_500, 900, (), 79_200)


def test_value_spec_judges_values() -> None:
    spec = ValueSpec("int", "A", 6, 32, 1, default=16)
    assert spec.reason_to_refuse(16) is None
    assert spec.reason_to_refuse(40) == "above the maximum 32"
    assert spec.reason_to_refuse(16.0) == "expected an integer"
    assert spec.reason_to_refuse(True) == "expected a number"
    assert ValueSpec("float", "A", 0, 1, 0.1).reason_to_refuse(0.3) is None
    assert ValueSpec("enum", values=("A", "B")).reason_to_refuse("C") == "not one of A, B"


def test_binding_registry_takes_a_new_bus_without_other_changes(tmp_path: Path) -> None:
    def check_can(ctx: BindingContext) -> list[tuple[tuple[str | int, ...], str]]:
        if ctx.parameter.binding.get("frame") == 0:
            return [(("binding", "frame"), "frame 0 is reserved")]
        return []

    canbus = BindingKind(
        "canbus",
        {"required": ["frame"], "properties": {"frame": {"type": "integer", "minimum": 0}}},
        check_can,
    )
    registry = DEFAULT_BINDINGS.with_kind(canbus)
    assert "canbus" in registry and "canbus" not in DEFAULT_BINDINGS
    text = VALID.replace("binding: {kind: internal}", "binding: {kind: canbus, frame: 7}", 1)
    source = write_family(tmp_path, text)
    assert check_paths([source], bindings=registry).ok
    assert not check_paths([source]).ok  # unknown to the default registry
    (built,) = build([source], tmp_path / "out", bindings=registry)
    loaded = parameters.load_compiled(built.path)
    assert loaded.parameter("max_current_a").binding.fields == {"frame": 7}
    refused = check_paths([write_family(tmp_path, text.replace("frame: 7", "frame: 0"))],
                          bindings=registry)  # fmt: skip
    (issue,) = refused.issues
    assert str(issue).endswith("parameters[1].binding.frame: frame 0 is reserved")
