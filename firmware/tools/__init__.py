"""Host-side build and manufacturing tools for the ampfleet firmware (CPython only).

Nothing here ships to a board: ``bundle`` compiles the board's modules with mpy-cross into a
versioned, reproducible archive; ``nvs`` writes a device's credentials into an NVS partition
image; ``vfs`` turns a bundle into the LittleFS image of the MicroPython filesystem;
``flashing`` spells the esptool command lines for the partition layout in ``partitions``.

Exceptions::

    Exception
     +-- ToolError            a build or manufacturing step cannot go on; the message says why
          +-- CompileError    mpy-cross refused a module: .path, .line, .message
"""

from __future__ import annotations


class ToolError(Exception):
    """A build or manufacturing step cannot go on; the message is meant for the operator."""


class CompileError(ToolError):
    """mpy-cross refused a module: where and why, as ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")
