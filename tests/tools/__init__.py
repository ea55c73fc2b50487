"""Tests of the host-side firmware tools; helpers to make a small firmware tree and bundle."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from cloud.cli import main

EPOCH = "1790000000"  # 2026-09-21T14:13:20Z
TREE = {
    "__init__.py": '"""firmware"""\n__version__ = "1.4.2"\n',
    "core/__init__.py": "",
    "core/codec.py": "import json\n\n\ndef encode(obj):\n    return json.dumps(obj)\n",
    "hal/__init__.py": "",
    "hal/pins.py": "LED = 8\n",
    "master/app.py": "from firmware.core import codec\n",
    "main.py": "import firmware.master.app\n",
    # never shipped: host-side code and caches
    "host/simulator.py": "import asyncio\n",
    "tools/helper.py": "import subprocess\n",
    "core/__pycache__/stale.py": "this is not python\n",
}
SHIPPED = [
    "firmware/__init__.mpy",
    "firmware/core/__init__.mpy",
    "firmware/core/codec.mpy",
    "firmware/hal/__init__.mpy",
    "firmware/hal/pins.mpy",
    "firmware/master/app.mpy",
    "main.py",
    "parameters/demo.json",
]


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path: text) below ``root``; ``root``."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def small_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A firmware source root and a parameter schema directory, both small."""
    source = write_tree(tmp_path / "fw", TREE)
    return source, write_tree(tmp_path / "schemas", {"demo.json": '{"family":"demo"}'})


def build(source: Path, schemas: Path, out: Path, *args: str, epoch: str = EPOCH) -> Result:
    """`ampfleet firmware build` of ``source`` into ``out``, at a fixed build time."""
    argv = ["firmware", "build", "--source", str(source), "--schemas", str(schemas)]
    return CliRunner().invoke(
        main, [*argv, "--out", str(out), *args], env={"SOURCE_DATE_EPOCH": epoch}
    )
