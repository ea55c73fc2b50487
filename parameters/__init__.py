"""Declarative parameter schemas, their meta-schema and compiler.

Every charger parameter (telemetry value, setting, status, command) is declared once, in
``parameters/families/<family>.yaml``; ``ampfleet parameters build`` compiles each family into
``parameters/build/<family>.json``, which the firmware loads and the cloud caches. Consumers use
the typed objects::

    family = parameters.load_family("ac22-3p")
    family.parameter("max_current_a").value.reason_to_refuse(40)  # -> "above the maximum 32"
    parameters.family_of(device.hardware_family)  # shipped families, cached; UnknownFamilyError

Reading a compiled file needs nothing but the standard library; compiling from source needs
PyYAML and jsonschema, imported only then.

Exceptions (defined in ``parameters.errors``)::

    ParameterSchemaError             base of this package
     +-- InvalidSchemaError          source files with issues: carries every Issue found
     +-- CompiledFormatError         a compiled file that is not what ``build`` writes
"""

from __future__ import annotations

from pathlib import Path

from parameters.errors import (
    CompiledFormatError,
    InvalidSchemaError,
    Issue,
    ParameterSchemaError,
    UnknownFamilyError,
)
from parameters.schema import (
    ROLES,
    Argument,
    Binding,
    CompiledFamily,
    Family,
    Node,
    Parameter,
    ValueSpec,
    from_compiled,
)

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "build"
FAMILIES_DIR = PACKAGE_DIR / "families"

__all__ = [
    "ROLES",
    "Argument",
    "Binding",
    "CompiledFamily",
    "CompiledFormatError",
    "Family",
    "InvalidSchemaError",
    "Issue",
    "Node",
    "Parameter",
    "ParameterSchemaError",
    "UnknownFamilyError",
    "ValueSpec",
    "family_of",
    "known_families",
    "load_compiled",
    "load_family",
]


def load_compiled(path: Path | str) -> Family:
    """The family in a compiled ``<family>.json``; CompiledFormatError if it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CompiledFormatError(f"cannot read {path}: {exc}") from exc
    return from_compiled(data).family


def load_family(
    family_id: str, build_dir: Path | None = None, families_dir: Path | None = None
) -> Family:
    """A family by id: from its compiled file when built, else compiled from its source.

    The compiled file wins because it is what firmware was built against; the source is the
    fallback for a checkout where nobody ran ``ampfleet parameters build`` yet.
    """
    compiled = (build_dir or BUILD_DIR) / f"{family_id}.json"
    if compiled.is_file():
        return load_compiled(compiled)
    from parameters.compiler import compile_family  # PyYAML and jsonschema only when needed

    return compile_family(family_id, families_dir or FAMILIES_DIR)


# Last: the catalogue calls load_family above (through the module, at call time).
from parameters.catalogue import family_of, known_families  # noqa: E402
