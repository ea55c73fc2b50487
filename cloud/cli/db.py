"""``ampfleet db``: schema migrations."""

from __future__ import annotations

import click

from cloud.cli.common import load_settings, prepare_database
from cloud.db import migrate


@click.group()
def db() -> None:
    """Records database: migrate, inspect."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the records database to the newest schema and seed roles and permissions."""
    settings = load_settings()
    prepare_database(settings)
    click.echo(f"database at {migrate.current(settings.database_url)}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate back to REVISION (`base` removes every table)."""
    settings = load_settings()
    migrate.downgrade(settings.database_url, revision)
    click.echo(f"database at {migrate.current(settings.database_url) or 'base'}")


@db.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    click.echo(migrate.current(load_settings().database_url) or "base (empty)")
