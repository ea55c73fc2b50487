"""A durable spool of sample batches the telemetry store could not take (it was down).

SQLite in WAL mode with synchronous=FULL: once ``put`` returns, the batch survives a crash of
the worker or the machine, so the worker may acknowledge its messages to the broker.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from cloud.files import private_sqlite_file
from cloud.telemetry.store import Sample


class Spool:
    """FIFO of batches on disk."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite_file(path)  # samples of the fleet: not for other local users (issue 13)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, samples TEXT)"
            )

    def put(self, samples: Sequence[Sample]) -> None:
        """Keep a batch durably."""
        rows = [[s.device_id, s.node, s.ts_ms, s.seq, dict(s.values)] for s in samples]
        with self._lock:
            self._db.execute("INSERT INTO batches (samples) VALUES (?)", (json.dumps(rows),))

    def peek(self) -> tuple[int, list[Sample]] | None:
        """The oldest batch and its id, or None when empty."""
        with self._lock:
            row = self._db.execute("SELECT id, samples FROM batches ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return int(row[0]), [Sample(d, n, ts, seq, v) for d, n, ts, seq, v in json.loads(row[1])]

    def remove(self, batch_id: int) -> None:
        """Forget a batch once the store has it."""
        with self._lock:
            self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    def depth(self) -> int:
        """Batches waiting."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
