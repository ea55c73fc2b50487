"""``ampfleet pki``: the platform PKI from the command line (docs/pki.md)."""

from __future__ import annotations

import click
from cryptography.hazmat.primitives import hashes

from cloud.cli.common import load_settings
from cloud.db import Database
from cloud.pki import PkiError
from cloud.settings import Settings


@click.group()
def pki() -> None:
    """Platform PKI: the CAs, the CRL and the files brokers read."""


def _database(settings: Settings) -> Database:
    # The schema must be there (`ampfleet db upgrade`); nothing is migrated from here.
    return Database(settings.database_url)


@pki.command("init")
def init() -> None:
    """Create the root and device CAs if missing (keys sealed with the KEK), write the CA
    chain and CRL files, and print the CAs' fingerprints. Safe to run again."""
    from cloud.pki import authorities, crl

    settings = load_settings()
    database = _database(settings)
    try:
        with database.transaction() as session:
            found = authorities.ensure(session, settings)
            crl.current(session, settings)
        with database.transaction() as session:
            number = crl.write_current(session, settings)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.engine.dispose()
    for authority in (found.root, found.devices):
        certificate = authority.certificate
        click.echo(
            f"{authority.name:8} {certificate.subject.rfc4514_string()}\n"
            f"         sha256 {certificate.fingerprint(hashes.SHA256()).hex()}\n"
            f"         valid until {certificate.not_valid_after_utc.isoformat()}"
        )
    click.echo(
        f"CA chain  {settings.pki_ca_file}\nCRL       {settings.pki_crl_file} (number {number})"
    )


@pki.command("crl")
@click.option("--force", is_flag=True, help="Issue a new CRL even when the current one is not due.")
def crl_command(force: bool) -> None:
    """Issue a new CRL when due (half of its validity passed; always with --force) and write
    the CRL and CA chain files now. Run it from cron where no charging worker runs."""
    from cloud.pki import crl

    settings = load_settings()
    database = _database(settings)
    try:
        with database.transaction() as session:
            if crl.stored(session) is None:
                raise click.ClickException("no PKI yet: run `ampfleet pki init`")
            if force:
                crl.regenerate(session, settings)
            else:
                crl.refresh_if_due(session, settings)
        with database.transaction() as session:
            number = crl.write_current(session, settings)
            row = crl.stored(session)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.engine.dispose()
    assert row is not None
    click.echo(
        f"CRL number {number}, next update {row.next_update.isoformat()}, written to "
        f"{settings.pki_crl_file}"
    )


@pki.command("show")
def show() -> None:
    """Print the CAs, the current CRL and the count of certificates by state."""
    from sqlalchemy import func, select

    from cloud.pki import authorities, crl
    from cloud.pki.models import DeviceCertificate

    settings = load_settings()
    database = _database(settings)
    try:
        with database.transaction() as session:
            found = authorities.existing(session)
            if found is None:
                click.echo("no PKI yet: `ampfleet pki init` creates it (or its first use)")
                return
            row = crl.stored(session)
            counts = dict(
                session.execute(
                    select(DeviceCertificate.state, func.count()).group_by(DeviceCertificate.state)
                ).all()
            )
    finally:
        database.engine.dispose()
    for authority in (found.root, found.devices):
        certificate = authority.certificate
        click.echo(
            f"{authority.name:8} {certificate.subject.rfc4514_string()}  sha256 "
            f"{certificate.fingerprint(hashes.SHA256()).hex()}  until "
            f"{certificate.not_valid_after_utc.date()}"
        )
    if row is not None:
        click.echo(
            f"CRL      number {row.number}, this update {row.this_update.isoformat()}, next "
            f"update {row.next_update.isoformat()}"
        )
    states = ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "none"
    click.echo(f"certificates issued to devices: {states}")


@pki.command("rekey")
@click.option(
    "--old-kek-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="File holding the KEK the keys are sealed with now.",
)
def rekey(old_kek_file: str) -> None:
    """Re-seal every PKI key with the KEK the settings name now (AMPFLEET_PKI_KEK or
    AMPFLEET_PKI_KEK_FILE), opening them with the old one: KEK rotation. All or nothing;
    safe to run again. Keep the old KEK until every process runs with the new one."""
    from pathlib import Path

    from cloud.pki import keystore
    from cloud.pki.kek import kek_from_text, load_kek

    settings = load_settings()
    database = _database(settings)
    try:
        old = kek_from_text(Path(old_kek_file).read_text(), f"the KEK file {old_kek_file}")
        new = load_kek(settings)
        with database.transaction() as session:
            done = keystore.reseal(session, old, new)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.engine.dispose()
    click.echo(f"resealed {len(done)} keys with the KEK {new.id}: {', '.join(done) or 'none'}")


@pki.command("new-kek")
def new_kek() -> None:
    """Print a fresh key-encryption key (base64 of 32 random bytes) for AMPFLEET_PKI_KEK or a
    file named by AMPFLEET_PKI_KEK_FILE. Keep it out of the data directory and back it up:
    without it the PKI's keys cannot be opened."""
    from cloud.pki.kek import new_kek_text

    click.echo(new_kek_text())
