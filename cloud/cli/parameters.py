"""``ampfleet parameters``: check the declarative parameter schemas, build their compiled form."""

from __future__ import annotations

import os
from pathlib import Path

import click

from parameters import BUILD_DIR, FAMILIES_DIR
from parameters.errors import InvalidSchemaError

# parameters.compiler (PyYAML, jsonschema) is imported inside the commands: the rest of
# `ampfleet` must start where only the runtime requirements are installed.


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies below it: shorter error lines."""
    try:
        return Path(os.path.relpath(path)) if path.resolve().is_relative_to(Path.cwd()) else path
    except ValueError:  # another drive on Windows
        return path


@click.group()
def parameters() -> None:
    """Parameter schemas: one YAML file per hardware family, compiled for firmware and cloud."""


@parameters.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--previous",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Build directory whose schema versions a change must bump "
    "[default: parameters/build, when it exists].",
)
def check(paths: tuple[Path, ...], previous: Path | None) -> None:
    """Validate family files (PATHS: files or directories; default parameters/families).

    Prints every mistake as `file:line: field.path: message` and exits with 1 if there is one.
    """
    from parameters.compiler import check_paths

    sources = list(paths) or [_shown(FAMILIES_DIR)]
    result = check_paths(sources, previous=previous or _shown(BUILD_DIR))
    for issue in result.issues:
        click.echo(str(issue))
    if not result.ok:
        click.echo(f"{len(result.issues)} error(s)", err=True)
        raise SystemExit(1)
    names = ", ".join(f"{f.id} (schema {f.schema_version})" for f in result.families)
    click.echo(f"ok: {names}")


@parameters.command("build")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [default: parameters/build].",
)
def build_command(paths: tuple[Path, ...], out: Path | None) -> None:
    """Check, then write one minified `<family>.json` per family (default parameters/families).

    Refuses to write anything when a check fails, and when a family's content changed since the
    previous build in the output directory without a schema_version bump.
    """
    from parameters.compiler import build

    sources = list(paths) or [_shown(FAMILIES_DIR)]
    try:
        built = build(sources, out or _shown(BUILD_DIR))
    except InvalidSchemaError as exc:
        for issue in exc.issues:
            click.echo(str(issue))
        click.echo(f"{len(exc.issues)} error(s): nothing built", err=True)
        raise SystemExit(1) from exc
    for item in built:
        click.echo(
            f"{item.path}: {item.size} bytes, schema {item.family}.{item.schema_version}, "
            f"sha256 {item.sha256[:16]}"
        )
