"""The embedded telemetry store: one SQLite file (``<data_dir>/telemetry.db``, WAL mode).

Narrow layout, one row per value, so that a parameter never needs a schema change::

    telemetry_series  (id, device, node)                series ids keep the big table small
    telemetry_fields  (id, name, kind)                  a parameter's one type, as in InfluxDB
    telemetry_samples (series, ts_ms, seq)              one row per sample: count(), seq
    telemetry_values  (series, field, ts_ms, value)     one row per value

The primary keys make rewrites idempotent (``INSERT OR REPLACE`` on ``(series, ts_ms)`` and
``(series, field, ts_ms)``: last wins, values the rewrite lacks stay, like an InfluxDB point
written twice) and serve the reads: ``latest`` is one index seek per known parameter, ``history``
one range scan per parameter, intervals are bucketed in SQL by integer division.

Concurrency: WAL lets readers (threads or processes) read while one writer writes. Each thread
gets its own connection (sqlite3 connections must not be shared between threads at once);
writes in this process are serialized by a lock, writes from other processes wait on SQLite's
busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud.files import private_sqlite_file
from cloud.telemetry.store import (
    MASTER,
    Point,
    Sample,
    StoreRejectedError,
    StoreUnavailableError,
    TelemetryError,
    Value,
    check_history_args,
    check_sample,
    field_problem,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry_series (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    node TEXT NOT NULL,
    CONSTRAINT uq_telemetry_series UNIQUE (device, node)
);
CREATE INDEX IF NOT EXISTS ix_telemetry_series_device ON telemetry_series (device);
CREATE TABLE IF NOT EXISTS telemetry_fields (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CONSTRAINT uq_telemetry_fields_name UNIQUE,
    kind TEXT NOT NULL CONSTRAINT ck_telemetry_fields_kind
        CHECK (kind IN ('float', 'int', 'bool', 'str'))
);
CREATE TABLE IF NOT EXISTS telemetry_samples (
    series INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (series, ts_ms)
) WITHOUT ROWID;
-- "value" has no declared type on purpose: SQLite then keeps integers, reals and text exactly
-- as given (a declared NUMERIC or ANY would turn the text '42' into the integer 42).
CREATE TABLE IF NOT EXISTS telemetry_values (
    series INTEGER NOT NULL,
    field INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value NOT NULL,
    PRIMARY KEY (series, field, ts_ms)
) WITHOUT ROWID;
"""

_KINDS: dict[type, str] = {float: "float", int: "int", bool: "bool", str: "str"}
_NUMERIC_KINDS = ("float", "int")
_SQL_AGGREGATES = {"mean": "AVG", "min": "MIN", "max": "MAX"}
_BUSY_TIMEOUT_MS = 10_000


def _value(kind: str, raw: Any) -> Value:
    """A stored value back in its parameter's type (SQLite has no bool)."""
    if kind == "bool":
        return bool(raw)
    if kind == "float":
        return float(raw)
    return raw


class SQLiteStore:
    """Telemetry in a local SQLite file; see the module docstring."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 before SQLite creates it world-readable (issue 13).
        private_sqlite_file(self.path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        # Ids never change once given (nothing is deleted), so the writer may cache them.
        self._series_ids: dict[tuple[str, str], int] = {}
        self._fields: dict[str, tuple[int, str]] = {}
        with self._errors("open"):
            connection = self._connection()
            # journal_mode is stored in the file: set once, every later connection gets WAL.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)

    # -- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # check_same_thread=False only so close() may close every thread's connection;
            # each connection is still used by the thread that opened it.
            connection = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            connection.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # NORMAL in WAL mode: a power cut may lose the last transactions, never corrupts.
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Translate sqlite3's exceptions into the store's."""
        try:
            yield
        except TelemetryError:
            raise
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise StoreRejectedError(f"SQLite {what}: {exc}") from exc
        except sqlite3.Error as exc:
            # Locked past the busy timeout, disk full, I/O error: the data is fine, try later.
            raise StoreUnavailableError(f"SQLite {what}: {exc}") from exc

    # -- writes -----------------------------------------------------------------------------

    def write(self, samples: Sequence[Sample]) -> None:
        """Write all samples in one transaction (see TelemetryStore)."""
        for sample in samples:  # InvalidSampleError before anything is written
            check_sample(sample)
        if not samples:
            return
        with self._write_lock, self._errors("write"):
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                new_series, new_fields = self._insert(connection, samples)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            # Only ids that were committed may be cached.
            self._series_ids.update(new_series)
            self._fields.update(new_fields)

    def _insert(
        self, connection: sqlite3.Connection, samples: Sequence[Sample]
    ) -> tuple[dict[tuple[str, str], int], dict[str, tuple[int, str]]]:
        series_ids = self._series_ids
        fields = self._fields
        new_series: dict[tuple[str, str], int] = {}
        new_fields: dict[str, tuple[int, str]] = {}
        sample_rows: list[tuple[int, int, int]] = []
        value_rows: list[tuple[int, int, int, Value]] = []
        for sample in samples:
            key = (sample.device_id, sample.node)
            series = series_ids.get(key) or new_series.get(key)
            if series is None:
                series = new_series[key] = self._series_id(connection, *key)
            ts = sample.ts_ms
            sample_rows.append((series, ts, sample.seq))
            for name, value in sample.values.items():
                field = fields.get(name) or new_fields.get(name)
                kind = _KINDS[type(value)]
                if field is None:
                    field = new_fields[name] = self._field(connection, name, kind)
                if field[1] != kind:
                    # InfluxDB refuses a parameter changing type too ("field type conflict").
                    raise StoreRejectedError(
                        f"field type conflict: parameter {name!r} is {field[1]}, "
                        f"sample {sample.device_id!r}/{sample.node!r}@{ts} has {kind}"
                    )
                value_rows.append((series, field[0], ts, value))
        connection.executemany(
            "INSERT OR REPLACE INTO telemetry_samples VALUES (?, ?, ?)", sample_rows
        )
        connection.executemany(
            "INSERT OR REPLACE INTO telemetry_values VALUES (?, ?, ?, ?)", value_rows
        )
        return new_series, new_fields

    @staticmethod
    def _series_id(connection: sqlite3.Connection, device: str, node: str) -> int:
        connection.execute(
            "INSERT OR IGNORE INTO telemetry_series (device, node) VALUES (?, ?)", (device, node)
        )
        row = connection.execute(
            "SELECT id FROM telemetry_series WHERE device = ? AND node = ?", (device, node)
        ).fetchone()
        return int(row[0])

    @staticmethod
    def _field(connection: sqlite3.Connection, name: str, kind: str) -> tuple[int, str]:
        # Another process may have named this parameter first: its type stands.
        connection.execute(
            "INSERT OR IGNORE INTO telemetry_fields (name, kind) VALUES (?, ?)", (name, kind)
        )
        row = connection.execute(
            "SELECT id, kind FROM telemetry_fields WHERE name = ?", (name,)
        ).fetchone()
        return int(row[0]), str(row[1])

    # -- reads ------------------------------------------------------------------------------

    def _series(self, connection: sqlite3.Connection, device_id: str, node: str | None) -> int:
        row = connection.execute(
            "SELECT id FROM telemetry_series WHERE device = ? AND node = ?",
            (device_id, node or MASTER),
        ).fetchone()
        return -1 if row is None else int(row[0])

    def _field_ids(
        self, connection: sqlite3.Connection, fields: Sequence[str] | None, kinds: Sequence[str]
    ) -> dict[int, tuple[str, str]]:
        """Field id -> (name, kind) of the requested (None: all) fields of the given kinds."""
        rows = connection.execute("SELECT id, name, kind FROM telemetry_fields").fetchall()
        wanted = None if fields is None else set(fields)
        return {
            int(fid): (name, kind)
            for fid, name, kind in rows
            if kind in kinds and (wanted is None or name in wanted)
        }

    def latest(self, device_id: str, node: str | None = None) -> dict[str, tuple[int, Value]]:
        """Newest ``(ts_ms, value)`` of each parameter: one index seek per known parameter."""
        with self._errors("read"):
            connection = self._connection()
            series = self._series(connection, device_id, node)
            # Parameters first (CROSS JOIN fixes the loop order): a join the planner may
            # order itself walks every row of the series, a thousand times slower.
            rows = connection.execute(
                """
                WITH newest AS (
                    SELECT f.id AS field, f.name AS name, f.kind AS kind, (
                        SELECT MAX(ts_ms) FROM telemetry_values
                        WHERE series = :series AND field = f.id
                    ) AS ts_ms
                    FROM telemetry_fields AS f
                )
                SELECT n.name, n.kind, n.ts_ms, v.value
                FROM newest AS n CROSS JOIN telemetry_values AS v
                  ON v.series = :series AND v.field = n.field AND v.ts_ms = n.ts_ms
                """,
                {"series": series},
            ).fetchall()
        return {name: (int(ts), _value(kind, raw)) for name, kind, ts, raw in rows}

    def history(
        self,
        device_id: str,
        start_ms: int,
        end_ms: int,
        fields: Sequence[str] | None = None,
        node: str | None = None,
        interval_s: int | None = None,
        aggregate: str | None = None,
        limit: int = 10000,
    ) -> list[Point]:
        """Raw points or per-interval aggregates in ``[start_ms, end_ms)`` (see TelemetryStore)."""
        check_history_args(start_ms, end_ms, interval_s, aggregate, limit)
        if fields is not None:
            fields = [f for f in fields if isinstance(f, str) and field_problem(f) is None]
        with self._errors("read"):
            connection = self._connection()
            series = self._series(connection, device_id, node)
            if interval_s is None or aggregate is None:
                ids = self._field_ids(connection, fields, tuple(_KINDS.values()))
                return self._raw(connection, series, ids, start_ms, end_ms, limit)
            ids = self._field_ids(connection, fields, _NUMERIC_KINDS)
            return self._aggregated(
                connection, series, ids, start_ms, end_ms, interval_s, aggregate, limit
            )

    @staticmethod
    def _raw(
        connection: sqlite3.Connection,
        series: int,
        ids: dict[int, tuple[str, str]],
        start_ms: int,
        end_ms: int,
        limit: int,
    ) -> list[Point]:
        if not ids:
            return []
        # "field IN (...)" with every id, even for all fields: it lets SQLite seek each
        # parameter's time range in the primary key instead of scanning the whole series.
        marks = ",".join("?" * len(ids))
        rows = connection.execute(
            f"SELECT ts_ms, field, value FROM telemetry_values "  # noqa: S608 - only "?" marks
            f"WHERE series = ? AND field IN ({marks}) AND ts_ms >= ? AND ts_ms < ? "
            f"ORDER BY ts_ms",
            (series, *ids, start_ms, end_ms),
        )
        points: list[Point] = []
        current: Point | None = None
        for ts, field, raw in rows:
            if current is None or current.ts_ms != ts:
                if len(points) == limit:
                    break
                current = Point(ts, {})
                points.append(current)
            name, kind = ids[field]
            current.values[name] = _value(kind, raw)
        return points

    @staticmethod
    def _aggregated(
        connection: sqlite3.Connection,
        series: int,
        ids: dict[int, tuple[str, str]],
        start_ms: int,
        end_ms: int,
        interval_s: int,
        aggregate: str,
        limit: int,
    ) -> list[Point]:
        if not ids:
            return []
        function = _SQL_AGGREGATES[aggregate]
        marks = ",".join("?" * len(ids))
        # Integer division buckets on the epoch (ts_ms >= 0 is checked on write), as
        # InfluxDB's GROUP BY time() does.
        rows = connection.execute(
            f"SELECT (ts_ms / ?) * ? AS bucket, field, {function}(value) "  # noqa: S608
            f"FROM telemetry_values "
            f"WHERE series = ? AND field IN ({marks}) AND ts_ms >= ? AND ts_ms < ? "
            f"GROUP BY bucket, field ORDER BY bucket",
            (interval_s * 1000, interval_s * 1000, series, *ids, start_ms, end_ms),
        )
        points: list[Point] = []
        current: Point | None = None
        for bucket, field, raw in rows:
            if current is None or current.ts_ms != bucket:
                if len(points) == limit:
                    break
                current = Point(bucket, {})
                points.append(current)
            name, kind = ids[field]
            current.values[name] = float(raw) if aggregate == "mean" else _value(kind, raw)
        return points

    def count(self, device_id: str | None = None) -> int:
        """Stored samples (rows of telemetry_samples)."""
        with self._errors("read"):
            connection = self._connection()
            if device_id is None:
                row = connection.execute("SELECT COUNT(*) FROM telemetry_samples").fetchone()
            else:
                row = connection.execute(
                    "SELECT COUNT(*) FROM telemetry_samples WHERE series IN "
                    "(SELECT id FROM telemetry_series WHERE device = ?)",
                    (device_id,),
                ).fetchone()
        return int(row[0])

    def ping(self) -> bool:
        """Whether the file can be read now."""
        try:
            self._connection().execute("SELECT 1 FROM telemetry_samples LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        """Close every thread's connection."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()
