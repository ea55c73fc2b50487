"""``ampfleet users``: administrators from the command line."""

from __future__ import annotations

import click
from sqlalchemy import select

from cloud.audit.service import record
from cloud.cli.common import load_settings, prepare_database
from cloud.identity.models import User
from cloud.identity.passwords import SecretHasher
from cloud.identity.seed import create_platform_admin, restore_platform_admin


@click.group()
def users() -> None:
    """Users: create the platform admin, reset passwords."""


def _password_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--password",
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="AMPFLEET_NEW_PASSWORD",
        help="The password (prompted when omitted; or AMPFLEET_NEW_PASSWORD).",
    )(func)


def _check_password(password: str) -> None:
    if len(password) < 12:
        raise click.BadParameter("must be at least 12 characters", param_hint="--password")


@users.command("create-admin")
@click.option("--email", required=True, help="Login of the new platform admin.")
@_password_option
def create_admin(email: str, password: str) -> None:
    """Create a platform admin (holds every permission in every organization).

    An existing user who is not an active platform admin (deactivated, or its role taken away)
    is made one again, with this password: the way back into a locked-out installation.
    """
    _check_password(password)
    settings = load_settings()
    database = prepare_database(settings)
    hasher = SecretHasher(settings.password_kdf)
    with database.transaction() as session:
        existing = session.scalar(select(User).where(User.email == email.lower()))
        if existing is not None:
            if not restore_platform_admin(session, existing):
                raise click.ClickException(
                    f"a user {email} exists already and is a platform admin; use set-password"
                )
            existing.password_hash = hasher.hash(password)
            record(
                session,
                None,
                "user.restore_admin",
                "user",
                existing.id,
                existing.organization_id,
                {"email": existing.email, "via": "cli"},
            )
            click.echo(f"user {email} is an active platform admin again, with the new password")
            return
        user = create_platform_admin(session, hasher, email, password)
        record(
            session,
            None,
            "user.create",
            "user",
            user.id,
            user.organization_id,
            {"email": user.email, "via": "cli"},
        )
    click.echo(f"platform admin {email} created")


@users.command("set-password")
@click.argument("email")
@_password_option
def set_password(email: str, password: str) -> None:
    """Set the password of the user EMAIL (e.g. to change the initial admin password)."""
    _check_password(password)
    settings = load_settings()
    database = prepare_database(settings)
    with database.transaction() as session:
        user = session.scalar(select(User).where(User.email == email.lower()))
        if user is None:
            raise click.ClickException(f"no user {email}")
        user.password_hash = SecretHasher(settings.password_kdf).hash(password)
        record(
            session,
            None,
            "user.update",
            "user",
            user.id,
            user.organization_id,
            {"password": "changed", "via": "cli"},
        )
    click.echo(f"password of {email} changed")
