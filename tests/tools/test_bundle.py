"""``ampfleet firmware build``: a temporary firmware tree in, a reproducible bundle out.

The real firmware is being written while these tests are, so all but one build a small tree
made here; the last builds whatever the repository holds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud.cli import main
from firmware.tools import ToolError, bundle
from tests.tools import EPOCH, SHIPPED, TREE, build, small_tree, write_tree


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return small_tree(tmp_path)[0]


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    return small_tree(tmp_path)[1]


def test_build_writes_bundle_archive_and_manifests(
    source: Path, schemas: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dist"
    result = build(source, schemas, out, "--version", "1.5.0-rc.1")
    assert result.exit_code == 0, result.output
    assert "firmware 1.5.0-rc.1: 8 files" in result.stdout
    assert "mpy-cross" in result.stderr  # the progress bar's label

    directory = out / "firmware-1.5.0-rc.1"
    on_disk = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert on_disk == sorted([*SHIPPED, "manifest.json"])
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["firmware_version"] == "1.5.0-rc.1"
    assert manifest["build_time"] == "2026-09-21T14:13:20Z"
    assert manifest["source_date_epoch"] == int(EPOCH)
    assert manifest["mpy_cross"]["arch"] == "rv32imc"
    assert manifest["mpy_cross"]["version"].startswith("MicroPython v1.")
    assert [f["path"] for f in manifest["files"]] == SHIPPED
    for entry in manifest["files"]:
        data = (directory / entry["path"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert (directory / "firmware/core/codec.mpy").read_bytes()[:2] == b"M\x06"  # mpy v6
    assert (directory / "main.py").read_text() == TREE["main.py"]  # run as source

    archive = out / "firmware-1.5.0-rc.1.tar.gz"
    release = json.loads((out / "firmware-1.5.0-rc.1.manifest.json").read_text())
    assert release["archive"] == {
        "name": archive.name,
        "size": archive.stat().st_size,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
    }
    assert {k: v for k, v in release.items() if k != "archive"} == manifest
    assert release["archive"]["sha256"] in result.stdout
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and names[0].startswith("firmware-1.5.0-rc.1/")
    assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {
        (int(EPOCH), 0, 0, "", 0o644)
    }
    read_manifest, files = bundle.read_archive(archive)
    assert read_manifest == manifest
    assert set(files) == {*SHIPPED, "manifest.json"}


def test_equal_inputs_give_a_byte_identical_archive(
    source: Path, schemas: Path, tmp_path: Path
) -> None:
    moved = shutil.copytree(source, tmp_path / "elsewhere" / "checkout")
    archives = []
    for n, tree in enumerate((source, source, moved)):
        result = build(tree, schemas, tmp_path / f"out{n}", "--version", "2.0.0")
        assert result.exit_code == 0, result.output
        archives.append((tmp_path / f"out{n}" / "firmware-2.0.0.tar.gz").read_bytes())
    assert archives[0] == archives[1] == archives[2]

    later = build(source, schemas, tmp_path / "later", "--version", "2.0.0", epoch="1790000600")
    assert later.exit_code == 0, later.output
    assert (tmp_path / "later" / "firmware-2.0.0.tar.gz").read_bytes() != archives[0]


def test_a_compile_error_names_file_and_line_and_writes_nothing(
    source: Path, schemas: Path, tmp_path: Path
) -> None:
    broken = source / "slave" / "relay.py"
    write_tree(source, {"slave/relay.py": "def on(pin):\n    pin.value(1)\n    return )\n"})
    out = tmp_path / "dist"
    result = build(source, schemas, out)
    assert result.exit_code == 1
    assert f"{broken}:3: SyntaxError: invalid syntax" in result.stdout
    assert "nothing written" in result.stderr
    assert not out.exists()


def test_the_version_comes_from_the_option_the_source_or_the_default(
    source: Path, schemas: Path, tmp_path: Path
) -> None:
    assert build(source, schemas, tmp_path / "a").exit_code == 0
    assert (tmp_path / "a" / "firmware-1.4.2.tar.gz").is_file()  # __version__ of __init__.py

    (source / "__init__.py").write_text('"""firmware, no version yet"""\n')
    assert build(source, schemas, tmp_path / "b").exit_code == 0
    assert (tmp_path / "b" / "firmware-0.0.0+dev.tar.gz").is_file()

    bad = build(source, schemas, tmp_path / "c", "--version", "../1.0")
    assert bad.exit_code == 2 and "'--version'" in bad.output


def test_bad_inputs_are_clean_errors(source: Path, schemas: Path, tmp_path: Path) -> None:
    empty = write_tree(tmp_path / "empty", {"host/sim.py": "x = 1\n"})
    result = build(empty, schemas, tmp_path / "out")
    assert result.exit_code == 1 and "no board modules" in result.output
    result = build(source, schemas, tmp_path / "out", epoch="yesterday")
    assert result.exit_code == 1 and "SOURCE_DATE_EPOCH" in result.output
    assert "Traceback" not in result.output


def test_build_time_without_source_date_epoch_is_the_clock_given() -> None:
    assert bundle.build_epoch({}, lambda: 1234.9) == 1234
    assert bundle.build_epoch({"SOURCE_DATE_EPOCH": "42"}, lambda: 1234.9) == 42


def test_a_tampered_archive_is_refused(source: Path, schemas: Path, tmp_path: Path) -> None:
    assert build(source, schemas, tmp_path, "--version", "1.0.0").exit_code == 0
    _manifest, files = bundle.read_archive(tmp_path / "firmware-1.0.0.tar.gz")
    files["firmware/hal/pins.mpy"] = b"M\x06 something else"
    forged = tmp_path / "forged.tar.gz"
    forged.write_bytes(bundle.archive("firmware-1.0.0", files, int(EPOCH)))
    with pytest.raises(ToolError, match=r"pins\.mpy does not match its sha256"):
        bundle.read_archive(forged)
    files.pop("firmware/hal/pins.mpy")
    forged.write_bytes(bundle.archive("firmware-1.0.0", files, int(EPOCH)))
    with pytest.raises(ToolError, match=r"disagree: firmware/hal/pins\.mpy"):
        bundle.read_archive(forged)


def test_the_repository_firmware_builds(tmp_path: Path) -> None:
    """Whatever firmware/ holds today compiles, and only the board's packages ship."""
    result = CliRunner().invoke(
        main, ["firmware", "build", "--out", str(tmp_path)], env={"SOURCE_DATE_EPOCH": EPOCH}
    )
    assert result.exit_code == 0, result.output
    (manifest_path,) = tmp_path.glob("firmware-*.manifest.json")
    paths = [f["path"] for f in json.loads(manifest_path.read_text())["files"]]
    assert "firmware/core/contract.mpy" in paths
    assert "firmware/core/topics.mpy" in paths  # contract.mpy imports it on the board
    assert "parameters/ac22-3p.json" in paths
    assert all(p.split("/")[:2] not in (["firmware", "host"], ["firmware", "tools"]) for p in paths)
