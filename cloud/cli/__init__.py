"""The ``ampfleet`` command."""

from __future__ import annotations

import click

from cloud import __version__
from cloud.cli.broker import broker
from cloud.cli.db import db
from cloud.cli.device import device
from cloud.cli.factory import factory
from cloud.cli.firmware import firmware
from cloud.cli.labels import labels
from cloud.cli.parameters import parameters
from cloud.cli.pki import pki
from cloud.cli.serve import api, up
from cloud.cli.simulate import simulate
from cloud.cli.users import users
from cloud.cli.workers import worker
from cloud.settings import DECLARED, Settings, SettingsError, markdown_table

# Settings `ampfleet settings` masks: every one holding a credential. Derived from the names so a
# new `*_password` / `*_token` / `*_secret` setting is masked without a second list to keep.
# (The `*_key_file` settings are paths to keys, not keys: shown.)
SECRET_SUFFIXES = ("_password", "_token", "_secret", "_key", "_kek")
SECRET_SETTINGS = frozenset(s.name for s in DECLARED if s.name.endswith(SECRET_SUFFIXES))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ampfleet")
def main() -> None:
    """ampfleet: the cloud platform for fleets of EV chargers.

    Settings come from AMPFLEET_* environment variables; `ampfleet settings` lists them.
    """


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the reference table instead of values.")
def show_settings(markdown: bool) -> None:
    """Show the resolved settings (or, with --markdown, the reference of every setting)."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    try:
        settings = Settings.load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, value in settings.values.items():
        click.echo(f"{name} = {'***' if name in SECRET_SETTINGS and value else value}")


main.add_command(db)
main.add_command(users)
main.add_command(api)
main.add_command(up)
main.add_command(worker)
main.add_command(broker)
main.add_command(parameters)
main.add_command(firmware)
main.add_command(factory)
main.add_command(simulate)
main.add_command(device)
main.add_command(labels)
main.add_command(pki)
