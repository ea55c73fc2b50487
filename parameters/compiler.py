"""The compiler: source files -> checked ``Family`` objects -> compact JSON, with every mistake
reported as ``file:line: field.path: message``.

Stages, each stopping the file at the first stage that finds something (later stages assume the
earlier ones held): YAML (syntax, duplicate keys) -> meta-schema (``meta-schema.json``, JSON
Schema 2020-12) -> binding sub-schemas (from the ``BindingRegistry``) -> typed objects ->
semantic rules (this module) -> version tracking against a previous build.

Binding kinds are a registry value passed in, not a global: ``DEFAULT_BINDINGS.with_kind(...)``
adds a bus protocol; the cloud only sees ``Binding(kind, fields)`` and never changes for it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path as FilePath
from typing import Any

import jsonschema

from parameters import FAMILIES_DIR, PACKAGE_DIR
from parameters.bindings import DEFAULT_BINDINGS, BindingRegistry
from parameters.checks import DEFAULT_ROLES, _Checker
from parameters.errors import CompiledFormatError, InvalidSchemaError, Issue, Path
from parameters.loader import Document, family_from_document, load_document
from parameters.schema import (
    Family,
    from_compiled,
    to_compiled,
)

META_SCHEMA_FILE = PACKAGE_DIR / "meta-schema.json"


# --- structural validation ---------------------------------------------------------------------


def meta_schema() -> dict[str, Any]:
    """The meta-schema every family file must satisfy (JSON Schema 2020-12)."""
    schema: dict[str, Any] = json.loads(META_SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def _schema_issues(
    validator: jsonschema.Draft202012Validator, document: Document, instance: Any, base: Path
) -> list[Issue]:
    issues = []
    for error in validator.iter_errors(instance):
        path: Path = (*base, *error.absolute_path)
        message = error.message
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            # Point at the unexpected key itself rather than at its parent's first line.
            extra = [k for k in error.instance if repr(k) in message]
            if extra:
                path = (*path, extra[0])
        elif error.validator == "oneOf" and error.context:
            message = min(error.context, key=lambda e: len(e.message)).message
        issues.append(document.issue(path, message))
    return issues


def _validate_bindings(
    document: Document, bindings: BindingRegistry
) -> tuple[Document, list[Issue]]:
    """Check each binding against its kind's sub-schema, then fill in the kind's defaults."""
    data = copy.deepcopy(document.data)
    issues: list[Issue] = []
    for index, item in enumerate(data["parameters"]):
        binding = item["binding"]
        path: Path = ("parameters", index, "binding")
        kind = bindings.get(binding["kind"])
        if kind is None:
            known = ", ".join(bindings.names())
            message = f"unknown binding kind {binding['kind']!r} (known: {known})"
            issues.append(document.issue((*path, "kind"), message))
            continue
        issues += _schema_issues(bindings.validator(kind.name), document, binding, path)
        item["binding"] = {**kind.defaults(), **binding}
    return dataclasses.replace(document, data=data), issues


# --- orchestration -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The families that passed and every issue found, in file and line order."""

    families: tuple[Family, ...]
    issues: tuple[Issue, ...]
    documents: Mapping[str, Document] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.issues


def check_file(
    file: FilePath,
    *,
    roles: Collection[str] = DEFAULT_ROLES,
    bindings: BindingRegistry = DEFAULT_BINDINGS,
) -> tuple[Family | None, Document | None, list[Issue]]:
    """Run every stage on one file: the family (None on any issue), its document, the issues."""
    document, issues = load_document(file)
    if document is None or issues:
        return None, document, issues
    validator = jsonschema.Draft202012Validator(meta_schema())
    issues = _schema_issues(validator, document, document.data, ())
    if issues:
        return None, document, issues
    document, issues = _validate_bindings(document, bindings)
    if issues:
        return None, document, issues
    family, issues = family_from_document(document)
    if file.stem != family.id:
        issues.append(
            document.issue(("family",), f"family {family.id!r} must be in {family.id}.yaml")
        )
    issues += _Checker(document, family, roles, bindings).run()
    return (None if issues else family), document, issues


def source_files(paths: Sequence[FilePath]) -> list[FilePath]:
    """The YAML files named, or found directly inside the directories named, sorted."""
    files: set[FilePath] = set()
    for path in paths:
        if path.is_dir():
            files.update(path.glob("*.yaml"))
            files.update(path.glob("*.yml"))
        else:
            files.add(path)
    return sorted(files)


def version_issue(family: Family, document: Document, previous: bytes) -> Issue | None:
    """The issue when ``family`` changed since the ``previous`` build without a version bump."""
    path: Path = ("schema_version",)
    try:
        before = from_compiled(previous)
    except CompiledFormatError as exc:
        return document.issue(path, f"previous build unreadable ({exc}); delete it to rebuild")
    old = before.family.schema_version
    new = family.schema_version
    if new < old:
        return document.issue(path, f"schema_version {new} is lower than the built {old}")
    if new == old and to_compiled(family) != previous:
        return document.issue(
            path, f"content changed since the build of version {old}: bump schema_version"
        )
    return None


def check_paths(
    paths: Sequence[FilePath],
    *,
    previous: FilePath | None = None,
    roles: Collection[str] = DEFAULT_ROLES,
    bindings: BindingRegistry = DEFAULT_BINDINGS,
) -> CheckResult:
    """Check every source file; with ``previous`` (a build directory), track schema versions."""
    files = source_files(paths)
    families: list[Family] = []
    documents: dict[str, Document] = {}
    issues: list[Issue] = []
    if not files:
        issues.append(Issue(", ".join(map(str, paths)), 1, (), "no family files found"))
    for file in files:
        family, document, found = check_file(file, roles=roles, bindings=bindings)
        issues += found
        if family is None or document is None:
            continue
        if family.id in documents:
            message = f"family {family.id!r} also declared in {documents[family.id].file}"
            issues.append(document.issue(("family",), message))
            continue
        documents[family.id] = document
        built = previous / f"{family.id}.json" if previous is not None else None
        if built is not None and built.is_file():
            issue = version_issue(family, document, built.read_bytes())
            if issue is not None:
                issues.append(issue)
                continue
        families.append(family)
    issues += _cross_family_issues(families, documents)
    ordered = sorted(issues, key=Issue.sort_key)
    return CheckResult(tuple(sorted(families, key=lambda f: f.id)), tuple(ordered), documents)


def _cross_family_issues(
    families: Sequence[Family], documents: Mapping[str, Document]
) -> list[Issue]:
    """One id, one type and unit across the fleet: InfluxDB fixes a field's type per measurement
    (a float ``energy_wh`` from one family and an int from another cannot share it)."""
    first: dict[str, tuple[str, str | None, str | None]] = {}
    issues = []
    for family in sorted(families, key=lambda f: f.id):
        for index, parameter in enumerate(family.parameters):
            if parameter.value is None:
                continue
            seen = first.setdefault(
                parameter.id, (family.id, parameter.value.type, parameter.value.unit)
            )
            if seen[1:] != (parameter.value.type, parameter.value.unit):
                message = (
                    f"{parameter.id!r} is {seen[1]} in {seen[2]} in family {seen[0]!r}: "
                    "the same id needs the same type and unit in every family"
                )
                issues.append(documents[family.id].issue(("parameters", index, "type"), message))
    return issues


@dataclasses.dataclass(frozen=True)
class BuiltFile:
    """One file written by ``build``."""

    family: str
    path: FilePath
    size: int
    schema_version: int
    sha256: str


def build(
    paths: Sequence[FilePath],
    out_dir: FilePath,
    *,
    roles: Collection[str] = DEFAULT_ROLES,
    bindings: BindingRegistry = DEFAULT_BINDINGS,
) -> list[BuiltFile]:
    """Check, then write ``<family>.json`` per family into ``out_dir``; InvalidSchemaError if not.

    Nothing is written unless every file passes, so a build directory never mixes versions.
    """
    result = check_paths(paths, previous=out_dir, roles=roles, bindings=bindings)
    if not result.ok:
        raise InvalidSchemaError(result.issues)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for family in result.families:
        data = to_compiled(family)
        target = out_dir / f"{family.id}.json"
        _write_atomically(target, data)
        sha = from_compiled(data).sha256
        built.append(BuiltFile(family.id, target, len(data), family.schema_version, sha))
    return built


def _write_atomically(target: FilePath, data: bytes) -> None:
    # A reader (the cloud's cache, a firmware packager) never sees half a file.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; the cloud and packagers must read it
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise


def compile_family(
    family_id: str,
    families_dir: FilePath = FAMILIES_DIR,
    *,
    roles: Collection[str] = DEFAULT_ROLES,
    bindings: BindingRegistry = DEFAULT_BINDINGS,
) -> Family:
    """Check and return one family from its source file; InvalidSchemaError on issues."""
    family, _, issues = check_file(
        families_dir / f"{family_id}.yaml", roles=roles, bindings=bindings
    )
    if issues or family is None:
        raise InvalidSchemaError(issues)
    return family
