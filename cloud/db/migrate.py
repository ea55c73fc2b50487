"""Alembic, driven from code: no alembic.ini to keep in step with the settings."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    """An Alembic configuration for the records database at ``url``."""
    config = Config()
    config.set_main_option("script_location", "cloud:migrations")
    # ConfigParser interpolation would eat the % of URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head", connection: Connection | None = None) -> None:
    """Migrate the database forward to ``revision``."""
    command.upgrade(alembic_config(url, connection), revision)


def downgrade(url: str, revision: str, connection: Connection | None = None) -> None:
    """Migrate the database back to ``revision`` (``base`` empties it)."""
    command.downgrade(alembic_config(url, connection), revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None for an empty database."""
    from pathlib import Path

    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, make_url

    parsed = make_url(url)
    database = parsed.database or ""
    on_disk = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if on_disk and not Path(database).exists():
        return None  # asking must not create the file
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
