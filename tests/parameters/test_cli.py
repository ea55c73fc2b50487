"""``ampfleet parameters check`` and ``build`` through click, as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud.cli import main
from tests.parameters import VALID, line_of, write_family


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["parameters", "--help"], "check"),
        (["parameters", "check", "--help"], "file:line: field.path: message"),
        (["parameters", "build", "--help"], "--out"),
    ],
)
def test_help(runner: CliRunner, args: list[str], says: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert says in result.output


def test_check_shipped_families(runner: CliRunner) -> None:
    result = runner.invoke(main, ["parameters", "check"])
    assert result.exit_code == 0, result.output
    assert "ok: ac22-3p (schema" in result.output


def test_check_reports_file_line_and_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    text = VALID.replace("min: 6", "min: 40")
    source = write_family(tmp_path, text)
    result = runner.invoke(main, ["parameters", "check", str(source)])
    assert result.exit_code == 1
    expected = f"{source}:{line_of(text, 'min: 40')}: parameters[1].min: min 40 is greater"
    assert expected in result.stdout


def test_build_writes_and_refuses(runner: CliRunner, tmp_path: Path) -> None:
    source = write_family(tmp_path, VALID)
    out = tmp_path / "out"
    result = runner.invoke(main, ["parameters", "build", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "demo.json" in result.stdout and "bytes, schema demo.1" in result.stdout
    assert json.loads((out / "demo.json").read_bytes())["family"] == "demo"

    write_family(tmp_path, VALID.replace("unit: W", "unit: kW"))
    result = runner.invoke(main, ["parameters", "build", str(source), "--out", str(out)])
    assert result.exit_code == 1
    assert "schema_version: content changed" in result.stdout
    assert "nothing built" in result.output


def test_build_default_sources(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["parameters", "build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ac22-3p.json",
        "ocpp-generic.json",
        "wallbox-7kw.json",
    ]
