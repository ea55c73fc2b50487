"""Records database: declarative base, engine and sessions.

One ``Database`` per process; Flask requests get a session that is committed explicitly by the
view and rolled back at teardown otherwise, so a failed request leaves no partial write.
Works on SQLite (embedded) and MySQL/MariaDB through pymysql (production).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, g
from sqlalchemy import JSON, DateTime, Engine, Enum, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from cloud.files import private_sqlite_file

# Named constraints so Alembic can alter and drop them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids are 32-bit on MySQL (and SQLite's INTEGER stops at 64): a larger number must be refused
# as input (404/422/401), never reach the database as an error.
MAX_ID = 2**31 - 1


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC (SQLite and MySQL DATETIME keep no zone); always returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Base of every ampfleet record."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON()}


def enum_column(kind: type[enum.Enum]) -> Enum:
    """A string column holding a StrEnum's values (not its names), checked in Python, not by a
    native database ENUM: adding a member then needs no ALTER TABLE."""
    return Enum(kind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


def utcnow() -> dt.datetime:
    """Now, aware, in UTC, to the second: what a MySQL DATETIME keeps, so ETags survive a reload."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def private_sqlite_database(url: str) -> None:
    """For a SQLite file URL, create the file 0600 before SQLite creates it 0644: the records
    hold password hashes (issue 13). Any other URL: nothing."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:"):
        return  # a SQLite URI filename: left to SQLite
    private_sqlite_file(database)


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings ampfleet relies on."""
    if url.startswith("sqlite"):
        private_sqlite_database(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            # Foreign keys are off by default in SQLite; WAL lets the API and workers share it.
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    # pool_pre_ping: a MySQL server restart must not surface as a 500 on the next request.
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600)


class Database:
    """The records database of one process: engine plus session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        """A new session; the caller owns it."""
        return self._factory()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error (CLI and workers)."""
        session = self.session()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def init_app(self, app: Flask) -> None:
        """Give every request its own session, closed (rolled back unless committed) at teardown."""
        app.extensions["ampfleet.db"] = self

        @app.teardown_appcontext
        def _close_session(_exc: BaseException | None) -> None:
            session: Session | None = g.pop("db_session", None)
            if session is not None:
                session.rollback()
                session.close()


def get_database(app: Flask) -> Database:
    """The app's database."""
    db: Database = app.extensions["ampfleet.db"]
    return db


def request_session() -> Session:
    """The current request's session, opened on first use."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = get_database(current_app).session()
    session: Session = g.db_session
    return session
