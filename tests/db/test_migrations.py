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


def test_0012_copies_announced_versions_from_the_status_onto_the_device(
    empty_database: str,
) -> None:
    """A device that announced itself under release 0008 shows its versions after upgrading."""
    from sqlalchemy import text

    upgrade(empty_database, "0008")
    now = "2026-12-01 10:00:00"
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, slug, name, created_at, updated_at)"
                    " VALUES (7, 'o', 'O', :now, :now)"
                ),
                {"now": now},
            )
            for device_id, serial in (("d-1", "S1"), ("d-2", "S2")):
                conn.execute(
                    text(
                        "INSERT INTO devices (id, serial, name, hardware_family, protocol, state,"
                        " organization_id, created_at, updated_at) VALUES"
                        " (:id, :serial, '', 'ac22-3p', 'native', 'active', 7, :now, :now)"
                    ),
                    {"id": device_id, "serial": serial, "now": now},
                )
            conn.execute(
                text(
                    "INSERT INTO device_status (device_id, online, changed_at, last_seen_at,"
                    " reported_firmware, reported_schema)"
                    " VALUES ('d-1', 1, :now, :now, '1.0.0', 'ac22-3p.3')"
                ),
                {"now": now},
            )
        upgrade(empty_database)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, firmware_version, schema_version FROM devices ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [("d-1", "1.0.0", "ac22-3p.3"), ("d-2", None, None)]
    finally:
        engine.dispose()


def test_0015_counts_devices_registered_before_it_as_approved(empty_database: str) -> None:
    """A fleet registered before the factory whitelist stays in service after upgrading."""
    from sqlalchemy import text

    upgrade(empty_database, "0014")
    now = "2026-12-01 10:00:00"
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organizations (id, slug, name, created_at, updated_at)"
                    " VALUES (7, 'o', 'O', :now, :now)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO devices (id, serial, name, hardware_family, protocol, state,"
                    " organization_id, created_at, updated_at) VALUES"
                    " ('d-1', 'S1', '', 'ac22-3p', 'native', 'active', 7, :now, :now)"
                ),
                {"now": now},
            )
        upgrade(empty_database)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT approved_at, approved_by, chip_id FROM devices WHERE id = 'd-1'")
            ).one()
        assert str(row[0]).startswith("2026-12-01 10:00:00") and row[1] == "system:migration"
        assert row[2] is None  # no hardware bound: nothing to compare at boot
    finally:
        engine.dispose()
