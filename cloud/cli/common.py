"""What the commands share: settings and a database ready to use."""

from __future__ import annotations

import click

from cloud.db import Database
from cloud.db.migrate import upgrade
from cloud.identity.passwords import SecretHasher
from cloud.identity.seed import ensure_admin, sync_catalogue
from cloud.settings import Settings, SettingsError


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a clean CLI error naming the variable."""
    try:
        return Settings.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def prepare_database(settings: Settings) -> Database:
    """Create the data directory, migrate to head, sync the permission catalogue and, on first
    start, create the platform admin (printing a generated password once)."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    with database.transaction() as session:
        sync_catalogue(session)
        generated = ensure_admin(
            session,
            SecretHasher(settings.password_kdf),
            settings.admin_email,
            settings.admin_password,
            settings.data_path,
        )
    if generated:
        saved = settings.data_path / "initial-admin-password"
        click.echo(
            f"created the platform admin {settings.admin_email} with password "
            f"{generated}\n(saved in {saved}; change it with `ampfleet users "
            f"set-password {settings.admin_email}`)"
        )
    return database
