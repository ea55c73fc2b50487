"""The ampfleet command: --help everywhere, migrations, administrators."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from cloud.cli import main
from cloud.db.migrate import alembic_config
from cloud.settings import DECLARED


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=lambda p: " ".join(p) or "ampfleet")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 3


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "AMPFLEET_DATA_DIR": str(tmp_path / "data"),
        "AMPFLEET_TESTING": "true",
        "AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def test_db_upgrade_downgrade_and_admin_commands(env: dict[str, str]) -> None:
    runner = CliRunner()
    assert "base" in runner.invoke(main, ["db", "current"]).output
    upgraded = runner.invoke(main, ["db", "upgrade"])
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert upgraded.exit_code == 0 and f"database at {head}" in upgraded.output
    made = runner.invoke(
        main,
        [
            "users",
            "create-admin",
            "--email",
            "ops@example.test",
            "--password",
            "a-long-enough-password",
        ],
    )
    assert made.exit_code == 0, made.output
    again = runner.invoke(
        main,
        [
            "users",
            "create-admin",
            "--email",
            "ops@example.test",
            "--password",
            "a-long-enough-password",
        ],
    )
    assert again.exit_code != 0 and "exists already" in again.output
    short = runner.invoke(
        main, ["users", "set-password", "ops@example.test", "--password", "short"]
    )
    assert short.exit_code != 0 and "--password" in short.output
    changed = runner.invoke(
        main,
        ["users", "set-password", "ops@example.test"],
        input="another-long-password\nanother-long-password\n",
    )
    assert changed.exit_code == 0, changed.output
    down = runner.invoke(main, ["db", "downgrade", "base"])
    assert down.exit_code == 0 and "base" in down.output


def test_a_bad_setting_is_a_clean_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMPFLEET_API_PORT", "eighty")
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 1 and "AMPFLEET_API_PORT" in result.output
    assert "Traceback" not in result.output


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "ampfleet"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, env={**os.environ}, check=False
    )
    assert result.returncode == 0 and "ampfleet" in result.stdout


def _lock_out(how: str) -> None:
    """Lock every platform admin out the way the API once allowed, straight in the database."""
    from sqlalchemy import delete, select

    from cloud.db import Database
    from cloud.identity.models import RoleAssignment, User, role_permissions
    from cloud.settings import Settings

    with Database(Settings.load().database_url).transaction() as session:
        if how == "deactivated":
            for user in session.scalars(select(User)):
                user.is_active = False
        elif how == "unassigned":
            session.execute(delete(RoleAssignment))
        else:  # stripped: roles/1 emptied
            session.execute(delete(role_permissions))


def _platform_admins() -> set[str]:
    from sqlalchemy import select

    from cloud.db import Database
    from cloud.identity.models import User
    from cloud.identity.principal import grants_of
    from cloud.settings import Settings

    with Database(Settings.load().database_url).transaction() as session:
        return {
            u.email
            for u in session.scalars(select(User))
            if u.is_active
            and any("platform:admin" in g.permissions for g in grants_of(u.assignments))
        }


@pytest.mark.parametrize("how", ["deactivated", "unassigned", "stripped"])
def test_create_admin_recovers_an_installation_whose_admin_is_locked_out(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setenv("AMPFLEET_ADMIN_EMAIL", "root@example.test")
    monkeypatch.setenv("AMPFLEET_ADMIN_PASSWORD", "the-first-admin-password")
    runner = CliRunner()
    first = runner.invoke(
        main,
        ["users", "set-password", "root@example.test"],
        input="x" * 12 + "\n" + "x" * 12 + "\n",
    )
    assert first.exit_code == 0, first.output
    _lock_out(how)
    assert _platform_admins() == set()
    made = runner.invoke(
        main,
        [
            "users",
            "create-admin",
            "--email",
            "other@example.test",
            "--password",
            "another-long-password",
        ],
    )
    assert made.exit_code == 0, made.output
    assert made.exception is None
    assert _platform_admins() == {"root@example.test", "other@example.test"}


def test_create_admin_restores_an_existing_user_instead_of_refusing(env: dict[str, str]) -> None:
    runner = CliRunner()
    args = ["users", "create-admin", "--email", "ops@example.test"]
    assert runner.invoke(main, [*args, "--password", "a-long-enough-password"]).exit_code == 0
    _lock_out("deactivated")  # ops and the default admin made on first start
    restored = runner.invoke(main, [*args, "--password", "a-new-long-password"])
    assert restored.exit_code == 0, restored.output
    assert "ops@example.test" in _platform_admins()


def test_settings_masks_every_secret(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 13: smtp_password was printed in clear.
    secrets = {
        s.name
        for s in DECLARED
        if s.name.endswith(("_password", "_token", "_secret", "_key")) or "secret" in s.name
    }
    assert {"smtp_password", "admin_password", "influxdb_token", "metrics_token"} <= secrets
    for name in secrets:
        monkeypatch.setenv(f"AMPFLEET_{name.upper()}", f"clear-{name}-value")
    result = CliRunner().invoke(main, ["settings"])
    assert result.exit_code == 0, result.output
    for name in secrets:
        assert f"clear-{name}-value" not in result.output, name
        assert f"{name} = ***" in result.output
