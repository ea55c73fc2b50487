"""Every class of mistake is reported at its file:line and field path, and build refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from parameters.compiler import build, check_paths
from parameters.errors import InvalidSchemaError, Issue
from tests.parameters import VALID, line_of, write_family

ENUM_STATUS = """\
  - id: cp_state
    node: meter
    kind: status
    type: enum
    values: []
    read: [owner]
    binding: {kind: internal}
"""
ENUM_SETTING = """\
  - id: mode
    node: master
    kind: setting
    type: enum
    values: [eco, fast]
    default: turbo
    read: [owner]
    write: [owner]
    binding: {kind: internal}
"""
MASTER_SENSOR = """\
  - id: board_temperature_c
    node: master
    kind: telemetry
    type: float
    unit: Cel
    period: 10s
    read: [owner]
    binding: {kind: i2c, address: 0x05, register: 0, width: 2}
"""


@dataclass(frozen=True)
class Case:
    """One mistake: how to make it, where it must be reported, and what the message says."""

    name: str
    old: str
    new: str
    at: str  # text of the line the issue must point at (first occurrence in the broken file)
    path: str
    says: str
    occurrence: int = 1


CASES = [
    Case("unknown type", "type: float", "type: flaot", "type: flaot", "parameters[0].type",
         "'flaot' is not one of"),
    Case("min > max", "min: 6", "min: 40", "min: 40", "parameters[1].min",
         "min 40 is greater than max 32"),
    Case("default above max", "default: 16", "default: 40", "default: 40",
         "parameters[1].default", "above the maximum 32"),
    Case("default off step", "step: 1", "step: 4", "default: 16", "parameters[1].default",
         "not a multiple of the step 4"),
    Case("duplicate id", "id: max_current_a", "id: power_w", "id: power_w",
         "parameters[1].id", "duplicate parameter id 'power_w' (line 9)", occurrence=2),
    Case("unknown node", "node: meter", "node: metre", "node: metre", "parameters[0].node",
         "unknown node 'metre'"),
    Case("i2c without address", "address: 0x20, ", "", "binding: {kind: i2c",
         "parameters[0].binding", "'address' is a required property"),
    Case("i2c without register", "register: 0, ", "", "binding: {kind: i2c",
         "parameters[0].binding", "'register' is a required property"),
    Case("modbus without unit", "{kind: i2c, address: 0x20, register: 0, width: 4, scale: 0.1}",
         "{kind: modbus, function: 4, register: 0}", "binding: {kind: modbus",
         "parameters[0].binding", "'unit' is a required property"),
    Case("unknown role", "read: [owner]", "read: [owner, janitor]", "janitor",
         "parameters[0].read[1]", "role 'janitor' does not exist"),
    Case("enum without values", "  - id: reboot", ENUM_STATUS + "  - id: reboot",
         "values: []", "parameters[2].values", "an enum needs values"),
    Case("enum default not a value", "  - id: reboot", ENUM_SETTING + "  - id: reboot",
         "default: turbo", "parameters[2].default", "not one of eco, fast"),
    Case("numeric telemetry without unit", "    unit: W\n", "", "- id: power_w",
         "parameters[0]", "numeric float needs a unit"),
    Case("command with period", "kind: command", "kind: command\n    period: 10s",
         "period: 10s", "parameters[2].period", "a command is not sampled", occurrence=2),
    Case("telemetry with write rights", "read: [owner]\n    binding: {kind: i2c",
         "read: [owner]\n    write: [owner]\n    binding: {kind: i2c", "write: [owner]",
         "parameters[0].write", "read-only: no write rights"),
    Case("setting without default", "    default: 16\n", "", "- id: max_current_a",
         "parameters[1]", "a setting needs a default"),
    Case("slave address out of range", "i2c_address: 0x20", "i2c_address: 0x78",
         "i2c_address: 0x78", "nodes[1].i2c_address", "I2C address 0x78 outside 0x08-0x77"),
    Case("binding address out of range", "  - id: reboot", MASTER_SENSOR + "  - id: reboot",
         "address: 0x05", "parameters[2].binding.address", "I2C address 0x05 outside"),
    Case("two slaves, one address", "parameters:",
         "  - {id: relay, role: relay, i2c_address: 0x20}\nparameters:", "id: relay",
         "nodes[2].i2c_address", "address 0x20 already used by slave 'meter'"),
    Case("id against the contract regex", "id: power_w", "id: Power_W", "id: Power_W",
         "parameters[0].id", "does not match '^[a-z][a-z0-9_.]{0,63}$'"),
    # Beyond the required list: mistakes the compiler catches on the way.
    Case("duplicate YAML key", "    unit: W\n", "    unit: W\n    unit: kW\n", "unit: kW",
         "parameters[0].unit", "duplicate key 'unit' (first at line 13)"),
    Case("unknown field", "    unit: W\n", "    unit: W\n    colour: red\n", "colour: red",
         "parameters[0].colour", "'colour' was unexpected"),
    Case("unknown binding kind", "{kind: internal}", "{kind: canbus}", "{kind: canbus}",
         "parameters[1].binding.kind", "unknown binding kind 'canbus'"),
    Case("binding address not the node's", "address: 0x20,", "address: 0x21,", "address: 0x21",
         "parameters[0].binding.address", "differs from node 'meter'"),
    Case("fractional int min", "min: 6", "min: 6.5", "min: 6.5", "parameters[1].min",
         "min of an int must be whole"),
    Case("setting that nobody may write", "    write: [installer]\n", "", "- id: max_current_a",
         "parameters[1]", "nobody may write this setting"),
    Case("command with a type", "kind: command", "kind: command\n    type: bool",
         "type: bool", "parameters[2].type", "a command takes args, not 'type'"),
    Case("unknown unit", "unit: W", "unit: Watt", "unit: Watt", "parameters[0].unit",
         "unknown unit 'Watt'"),
    Case("telemetry without period", "    period: 10s\n", "", "- id: power_w", "parameters[0]",
         "telemetry needs a sampling period"),
    Case("family not named like its file", "family: demo", "family: other", "family: other",
         "family", "must be in other.yaml"),
    Case("register overlap", "  - id: reboot", MASTER_SENSOR.replace("board_temperature_c",
         "t_c").replace("node: master", "node: meter").replace("0x05", "0x20")
         .replace("register: 0", "register: 2") + "  - id: reboot", "register: 2",
         "parameters[2].binding.register", "registers overlap those of 'power_w'"),
]  # fmt: skip


def broken(case: Case) -> str:
    assert case.old in VALID, case.name
    return VALID.replace(case.old, case.new, 1)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mistake_is_located_and_blocks_the_build(case: Case, tmp_path: Path) -> None:
    text = broken(case)
    source = write_family(tmp_path, text)
    result = check_paths([source])
    expected_line = line_of(text, case.at, case.occurrence)
    matching = [i for i in result.issues if case.says in i.message]
    assert matching, [str(i) for i in result.issues]
    issue = matching[0]
    assert (issue.file, issue.line) == (str(source), expected_line), str(issue)
    assert str(issue).startswith(f"{source}:{expected_line}: {case.path}: "), str(issue)
    out = tmp_path / "build"
    with pytest.raises(InvalidSchemaError) as raised:
        build([source], out)
    assert issue in raised.value.issues
    assert not out.exists() or not list(out.iterdir())


def test_valid_base_is_valid(tmp_path: Path) -> None:
    result = check_paths([write_family(tmp_path, VALID)])
    assert result.issues == ()
    assert [f.id for f in result.families] == ["demo"]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    text = VALID.replace("    kind: setting", "    kind: [setting")
    result = check_paths([write_family(tmp_path, text)])
    (issue,) = result.issues
    assert issue.message.startswith("YAML: ")
    assert issue.line > line_of(text, "kind: [setting") - 1


def test_same_id_must_keep_type_and_unit_across_families(tmp_path: Path) -> None:
    other = VALID.replace("family: demo", "family: other").replace("unit: W", "unit: kW")
    write_family(tmp_path, VALID)
    write_family(tmp_path, other, "other")
    result = check_paths([tmp_path])
    (issue,) = result.issues
    assert issue.file.endswith("other.yaml")
    assert issue.line == line_of(other, "type: float")
    assert "same type and unit in every family" in issue.message


def test_every_issue_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = VALID.replace("min: 6", "min: 40").replace("node: meter", "node: metre")
    messages = [i.message for i in check_paths([write_family(tmp_path, text)]).issues]
    assert any("greater than max" in m for m in messages)
    assert any("unknown node" in m for m in messages)


def test_issue_renders_as_file_line_path_message() -> None:
    issue = Issue("a.yaml", 7, ("parameters", 3, "binding", "address"), "bad")
    assert str(issue) == "a.yaml:7: parameters[3].binding.address: bad"
