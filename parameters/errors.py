"""Errors of the parameter schema package, and the ``Issue`` every check reports.

Exceptions::

    ParameterSchemaError
     +-- InvalidSchemaError     (source files with issues: carries every Issue found)
     +-- CompiledFormatError    (a compiled file that is not what ``build`` writes)
     +-- UnknownFamilyError     (``family_of``: no shipped family has that id)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

Path = tuple[str | int, ...]


def render_path(path: Path) -> str:
    """``("parameters", 3, "min")`` -> ``parameters[3].min``; the root is ``(root)``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text or "(root)"


@dataclasses.dataclass(frozen=True)
class Issue:
    """One mistake in a source file: where it is (file, line, field path) and what is wrong."""

    file: str
    line: int
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {render_path(self.path)}: {self.message}"

    def sort_key(self) -> tuple[str, int, str, str]:
        """Order by file, then line: paths mix ints and strings, so they sort as text."""
        return (self.file, self.line, render_path(self.path), self.message)


class ParameterSchemaError(Exception):
    """Base of the errors of the ``parameters`` package."""


class InvalidSchemaError(ParameterSchemaError):
    """Source schemas that failed the checks; ``issues`` lists every one found."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        lines = [str(issue) for issue in self.issues[:20]]
        if len(self.issues) > 20:
            lines.append(f"... and {len(self.issues) - 20} more")
        super().__init__("\n".join(lines))


class CompiledFormatError(ParameterSchemaError):
    """A compiled family file that cannot be read (unknown layout, missing field, bad hash)."""


class UnknownFamilyError(ParameterSchemaError):
    """A ``hardware_family`` that names no shipped parameter schema; ``family_id`` says which."""

    def __init__(self, family_id: str) -> None:
        super().__init__(f"no parameter schema for hardware family {family_id!r}")
        self.family_id = family_id
