"""Every SQLite file the platform creates is readable by its owner only (issue 13)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cloud.db import Database, make_engine
from cloud.settings import Settings
from cloud.telemetry.store import Sample, open_store


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default, which leaves files world-readable
    try:
        yield
    finally:
        os.umask(previous)


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir() if p.is_file()}


def test_records_and_telemetry_databases_are_private(tmp_path: Path, usual_umask: None) -> None:
    data = tmp_path / "data"
    settings = Settings.load(environ={"AMPFLEET_DATA_DIR": str(data)})
    data.mkdir()
    database = Database(settings.database_url)
    store = open_store(settings)
    try:
        with database.engine.begin() as connection:
            connection.execute(text("CREATE TABLE secret (hash TEXT)"))
            connection.execute(text("INSERT INTO secret VALUES ('$argon2id$...')"))
        store.write([Sample("dev-1", "master", 1_700_000_000_000, 1, {"power_w": 7.4})])
        modes = _modes(data)
        # Both databases and their WAL companions exist while they are open.
        assert {"ampfleet.db", "ampfleet.db-wal", "telemetry.db", "telemetry.db-wal"} <= set(modes)
        assert {name: oct(mode) for name, mode in modes.items()} == {
            name: oct(0o600) for name in modes
        }
    finally:
        store.close()
        database.engine.dispose()
    assert {name: oct(mode) for name, mode in _modes(data).items()} == {
        name: oct(0o600) for name in _modes(data)
    }


def test_an_existing_world_readable_database_is_tightened(
    tmp_path: Path, usual_umask: None
) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_db_upgrade_and_the_ingest_spool_create_private_files(
    tmp_path: Path, usual_umask: None
) -> None:
    from cloud.db.migrate import upgrade
    from cloud.ingest.spool import Spool

    url = f"sqlite:///{tmp_path / 'ampfleet.db'}"
    upgrade(url)  # what `ampfleet db upgrade` runs: usually the first to create the file
    spool = Spool(tmp_path / "spool.db")
    try:
        spool.put([Sample("dev-1", "master", 1_700_000_000_000, 1, {"power_w": 7.4})])
        modes = _modes(tmp_path)
        assert {"ampfleet.db", "spool.db"} <= set(modes)
        assert {name: oct(mode) for name, mode in modes.items()} == {
            name: oct(0o600) for name in modes
        }
    finally:
        spool.close()
