"""Files holding records or credentials: created readable by their owner only (issue 13)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# SQLite's companions of a database file; SQLite creates them with the database file's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_sqlite_file(path: Path | str) -> None:
    """Make sure the SQLite database ``path`` exists with mode 0600 before SQLite opens it.

    SQLite would create it (and so its -wal/-shm/-journal files, which copy its mode) with
    0666 minus the umask: world-readable. An existing file, or companion, readable by group or
    others is tightened too (an install from before this fix); one we may not chmod is left.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS)):
        with contextlib.suppress(OSError):  # missing, or not ours to chmod
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)
