"""Migrations upgrade an empty database to head and downgrade it, on SQLite and MariaDB, and
the head schema is exactly what the models declare."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from cloud.db.migrate import current, downgrade, upgrade
from cloud.models import Base


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_mariadb_database")
    return make()


def test_upgrade_to_head_matches_the_models_and_downgrade_empties(empty_database: str) -> None:
    assert current(empty_database) is None
    upgrade(empty_database)
    assert current(empty_database) is not None
    engine = create_engine(empty_database)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations differ: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
    finally:
        engine.dispose()
    downgrade(empty_database, "base")
    engine = create_engine(empty_database)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(empty_database)  # and back up again: downgrade left nothing behind
