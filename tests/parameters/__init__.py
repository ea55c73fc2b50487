"""Tests of the parameter schemas and their compiler; helpers to write small family files."""

from __future__ import annotations

from pathlib import Path

# A small valid family. Tests break one thing in it and look for the issue at the right line.
VALID = """\
family: demo
name: Demo charger
firmware: ">=1.0.0 <2.0.0"
schema_version: 1
nodes:
  - {id: master, role: master}
  - {id: meter, role: meter, i2c_address: 0x20}
parameters:
  - id: power_w
    node: meter
    kind: telemetry
    type: float
    unit: W
    min: 0
    max: 25000
    period: 10s
    read: [owner]
    binding: {kind: i2c, address: 0x20, register: 0, width: 4, scale: 0.1}
  - id: max_current_a
    node: master
    kind: setting
    type: int
    unit: A
    min: 6
    max: 32
    step: 1
    default: 16
    read: [owner]
    write: [installer]
    binding: {kind: internal}
  - id: reboot
    node: master
    kind: command
    write: [operator]
    binding: {kind: internal}
"""


def write_family(directory: Path, text: str, name: str = "demo") -> Path:
    """Write ``text`` as ``<name>.yaml`` in ``directory`` and return its path."""
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` that contains ``needle``."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return found[occurrence - 1]
