"""The firmware bundle: the board's modules compiled to .mpy, plus the compiled parameter
schemas, as a directory and a reproducible ``firmware-<version>.tar.gz``.

Layout of ``<out>``::

    firmware-<version>/                 what goes onto the board's filesystem (vfs), as is
        manifest.json                   version, build time, compiler, every file's size+sha256
        firmware/__init__.mpy           the package keeps its import path: firmware.core...
        firmware/core/*.mpy ...
        parameters/<family>.json        the compiled parameter schemas
        main.py, boot.py                only when the source has them: run by name, as source
    firmware-<version>.tar.gz           the directory above, byte-identical for equal inputs
    firmware-<version>.manifest.json    manifest.json plus the archive's name, size and sha256

The archive cannot hold its own checksum, hence the manifest beside it.
"""

from __future__ import annotations

import ast
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from firmware.tools import CompileError, ToolError
from firmware.tools.mpycross import Compiler

PACKAGE = "firmware"  # the import name on the board, whatever the source directory is called
SHIPPED = ("core", "hal", "master", "slave")  # subpackages that run on a board (not host, tools)
# MicroPython runs boot.py and main.py from the filesystem root by file name, and only as source.
ENTRY_POINTS = ("boot.py", "main.py")
SCHEMAS = "parameters"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
DEFAULT_VERSION = "0.0.0+dev"
# Contract §4.7: an OTA version is 1-64 characters; these also keep it safe in a file name.
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


@dataclass(frozen=True)
class Source:
    """One input file and where it lands in the bundle."""

    file: Path
    path: str  # in the bundle, POSIX
    compile: bool  # True: .py compiled to .mpy; False: copied as is (after a syntax check)

    @property
    def name(self) -> str:
        """The source path recorded in the .mpy and named in compile errors."""
        return str(PurePosixPath(self.path).with_suffix(".py")) if self.compile else self.path


@dataclass(frozen=True)
class BundleFile:
    """A file of the bundle as the manifest lists it."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    """A finished build."""

    version: str
    directory: Path
    archive: Path
    release_manifest: Path
    archive_sha256: str
    files: tuple[BundleFile, ...]


def check_version(version: str) -> str:
    """``version`` when it is usable as a firmware version; ToolError otherwise."""
    if not _VERSION.match(version):
        raise ToolError(
            f"version {version!r}: use 1-64 letters, digits, '.', '+', '_' or '-', "
            "starting with a letter or digit"
        )
    return version


def source_version(root: Path) -> str | None:
    """The ``__version__ = "..."`` string of ``root/__init__.py``, read without importing it."""
    init = root / "__init__.py"
    if not init.is_file():
        return None
    try:
        tree = ast.parse(init.read_text(encoding="utf-8"))
    except SyntaxError:
        return None  # the compile step reports it, as file:line
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def build_epoch(environ: Mapping[str, str], now: Callable[[], float]) -> int:
    """The build time: SOURCE_DATE_EPOCH when set (reproducible builds), else ``now()``."""
    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return int(now())
    if not raw.isdigit():
        raise ToolError(f"SOURCE_DATE_EPOCH={raw!r}: not a number of seconds since 1970")
    return int(raw)


def collect(root: Path, schemas: Path | None) -> list[Source]:
    """Every file of the bundle, sorted by its bundle path."""
    if not root.is_dir():
        raise ToolError(f"{root}: no such firmware source directory")
    sources: list[Source] = []
    if (root / "__init__.py").is_file():
        sources.append(_module(root, root / "__init__.py"))
    for package in SHIPPED:
        for file in sorted((root / package).rglob("*.py")):
            relative = file.relative_to(root)
            if not any(p == "__pycache__" or p.startswith(".") for p in relative.parts):
                sources.append(_module(root, file))
    if not any(s.compile and s.path != f"{PACKAGE}/__init__.mpy" for s in sources):
        raise ToolError(f"{root}: no board modules (looked in {', '.join(SHIPPED)})")
    for name in ENTRY_POINTS:
        if (root / name).is_file():
            sources.append(Source(root / name, name, compile=False))
    if schemas is not None:
        if not schemas.is_dir():
            raise ToolError(f"{schemas}: no such parameter schema directory")
        for file in sorted(schemas.glob("*.json")):
            sources.append(Source(file, f"{SCHEMAS}/{file.name}", compile=False))
    return sorted(sources, key=lambda s: s.path)


def _python(source: Source) -> bool:
    return source.compile or source.path.endswith(".py")


def _module(root: Path, file: Path) -> Source:
    path = PurePosixPath(PACKAGE, *file.relative_to(root).with_suffix(".mpy").parts)
    return Source(file, str(path), compile=True)


def build(
    sources: list[Source],
    out: Path,
    version: str,
    epoch: int,
    compiler: Compiler,
    on_file: Callable[[Source], None] = lambda _: None,
) -> Bundle:
    """Compile and collect ``sources`` into ``out``; CompileError at the first module that does
    not compile, before anything is written."""
    check_version(version)
    contents: dict[str, bytes] = {}
    for source in sources:
        try:
            compiled = compiler.compile(source.file, source.name) if _python(source) else b""
        except CompileError as exc:  # name the file the operator edits, not its bundle path
            raise CompileError(str(source.file), exc.line, exc.message) from exc
        # entry points are only syntax-checked: MicroPython runs them as source
        contents[source.path] = compiled if source.compile else source.file.read_bytes()
        on_file(source)
    files = tuple(
        BundleFile(path, len(data), hashlib.sha256(data).hexdigest())
        for path, data in sorted(contents.items())
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "firmware_version": version,
        "build_time": dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_date_epoch": epoch,
        "mpy_cross": {
            "version": compiler.version,
            "arch": compiler.arch,
            "mpy": compiler.mpy_version,
        },
        "files": [asdict(f) for f in files],
    }
    contents[MANIFEST] = _json(manifest)

    stem = f"firmware-{version}"
    directory = out / stem
    if directory.exists():
        shutil.rmtree(directory)  # a file dropped from the source must not linger in the bundle
    for path, data in contents.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    archive_bytes = archive(stem, contents, epoch)
    archive_path = out / f"{stem}.tar.gz"
    archive_path.write_bytes(archive_bytes)
    digest = hashlib.sha256(archive_bytes).hexdigest()
    release = {
        **manifest,
        "archive": {"name": archive_path.name, "size": len(archive_bytes), "sha256": digest},
    }
    release_path = out / f"{stem}.manifest.json"
    release_path.write_bytes(_json(release))
    return Bundle(version, directory, archive_path, release_path, digest, files)


def archive(top: str, contents: Mapping[str, bytes], epoch: int) -> bytes:
    """A .tar.gz of ``contents`` under ``top/``, identical for identical arguments: sorted
    entries, one mtime, no owner, fixed modes, and a gzip header without name or clock."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(contents):
            data = contents[path]
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(data)
            info.mtime = epoch
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=epoch)


def read_archive(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the files (manifest.json included) of a bundle archive, after checking
    every file against the manifest (size and sha256) and that the archive holds nothing else."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            raw = {m.name: _read(tar, m) for m in members}
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ToolError(f"{path}: not a firmware bundle archive ({exc})") from exc
    tops = {name.split("/", 1)[0] for name in raw}
    if len(tops) != 1 or not all("/" in name for name in raw):
        raise ToolError(f"{path}: a bundle archive holds one top directory")
    top = tops.pop()
    files = {name.split("/", 1)[1]: data for name, data in raw.items()}
    if MANIFEST not in files:
        raise ToolError(f"{path}: no {MANIFEST}")
    manifest_bytes = files.pop(MANIFEST)
    try:
        manifest = json.loads(manifest_bytes)
        listed = {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"{path}: unreadable {MANIFEST} ({exc})") from exc
    if set(listed) != set(files):
        extra = sorted(set(files) ^ set(listed))
        raise ToolError(f"{path}: files and {MANIFEST} disagree: {', '.join(extra)}")
    for name, data in files.items():
        if (len(data), hashlib.sha256(data).hexdigest()) != listed[name]:
            raise ToolError(f"{path}: {top}/{name} does not match its sha256 in {MANIFEST}")
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise ToolError(f"{path}: unsafe path {name!r}")
    files[MANIFEST] = manifest_bytes
    return manifest, files


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(member)
    assert extracted is not None  # regular files always extract
    return extracted.read()


def _json(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
