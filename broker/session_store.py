"""The embedded broker's persistent sessions on disk, across a restart of the broker.

amqtt keeps sessions in memory only. On a clean stop the broker (broker.embedded) writes every
persistent session (CleanSession 0) — who it is, its subscriptions and the QoS 1 messages
queued or in flight for it — to a SQLite file in the data directory (0600), and reads it back
on start, so a sample the broker acknowledged before a restart of the platform still reaches
the ingest worker's session after it. The file is emptied once read: from then on the broker's
memory holds the messages, and a later crash must not replay what was delivered since.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from broker.registry import Identity
from cloud.files import private_sqlite_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    is_service INTEGER NOT NULL,
    is_bridge INTEGER NOT NULL,
    secret_hash TEXT
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL REFERENCES sessions (client_id),
    topic_filter TEXT NOT NULL,
    qos INTEGER NOT NULL
);
-- seq keeps the order the broker would have sent them in.
CREATE TABLE IF NOT EXISTS messages (
    client_id TEXT NOT NULL REFERENCES sessions (client_id),
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    """A message a session has not acknowledged yet."""

    topic: str
    payload: bytes
    qos: int


@dataclasses.dataclass(frozen=True)
class StoredSession:
    """A persistent session as the broker must restore it."""

    client_id: str
    identity: Identity
    subscriptions: tuple[tuple[str, int], ...]
    messages: tuple[StoredMessage, ...]


class SessionStore:
    """Saves and loads the persistent sessions in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite_file(self.path)
        connection = sqlite3.connect(self.path)
        try:
            with connection:
                connection.executescript(SCHEMA)
                yield connection
        finally:
            connection.close()

    def save(self, sessions: Iterable[StoredSession]) -> int:
        """Replace the file's contents with ``sessions``; the number of messages saved."""
        saved = 0
        with self._connection() as db:
            _clear(db)
            for stored in sessions:
                identity = stored.identity
                db.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                    (
                        stored.client_id,
                        identity.username,
                        identity.is_service,
                        identity.is_bridge,
                        identity.secret_hash,
                    ),
                )
                db.executemany(
                    "INSERT INTO subscriptions VALUES (?, ?, ?)",
                    [(stored.client_id, f, qos) for f, qos in stored.subscriptions],
                )
                db.executemany(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                    [
                        (stored.client_id, seq, m.topic, m.payload, m.qos)
                        for seq, m in enumerate(stored.messages)
                    ],
                )
                saved += len(stored.messages)
        return saved

    def take(self) -> list[StoredSession]:
        """The saved sessions, emptying the file (the caller now holds them)."""
        if not self.path.exists():
            return []
        sessions = []
        with self._connection() as db:
            rows = db.execute("SELECT * FROM sessions ORDER BY client_id").fetchall()
            for client_id, username, is_service, is_bridge, secret_hash in rows:
                subscriptions = db.execute(
                    "SELECT topic_filter, qos FROM subscriptions WHERE client_id = ?",
                    (client_id,),
                ).fetchall()
                messages = db.execute(
                    "SELECT topic, payload, qos FROM messages WHERE client_id = ? ORDER BY seq",
                    (client_id,),
                ).fetchall()
                sessions.append(
                    StoredSession(
                        client_id,
                        Identity(username, bool(is_service), secret_hash, bool(is_bridge)),
                        tuple((f, int(qos)) for f, qos in subscriptions),
                        tuple(StoredMessage(t, bytes(p), int(q)) for t, p, q in messages),
                    )
                )
            _clear(db)
        return sessions


def _clear(db: sqlite3.Connection) -> None:
    for table in ("messages", "subscriptions", "sessions"):
        db.execute(f"DELETE FROM {table}")  # noqa: S608 - table names are the constants above
