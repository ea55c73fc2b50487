"""Fixtures: the API on SQLite and on the real MariaDB, and a client that speaks to it.

Every test that takes ``app`` (directly or through ``client``) runs once per backend. Tests
commit for real; each builds its own organization (``tenant``), so they do not see each other.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from flask import Flask

from cloud.app import create_app
from cloud.db import get_database
from cloud.db.migrate import upgrade
from cloud.identity.seed import ensure_admin, sync_catalogue
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant, settings_for

# The device-link fixtures (real brokers provisioned through the API) and a real SMTP server,
# for every package.
pytest_plugins = ["tests.link", "tests.services.smtp"]

MARIADB = dict(host="127.0.0.1", port=3306, user="root", password="")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-mariadb",
        action="store_true",
        help="Fail (instead of skip) when MariaDB cannot be reached.",
    )


@pytest.fixture(scope="session")
def mariadb_server(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Connection parameters of the real MariaDB, or skip/fail when it is not there."""
    try:
        pymysql.connect(**MARIADB).close()
    except pymysql.err.OperationalError as exc:
        if request.config.getoption("--require-mariadb"):
            pytest.fail(f"MariaDB is required and not reachable: {exc}")
        pytest.skip(f"MariaDB not reachable: {exc}")
    return MARIADB


@pytest.fixture(scope="session")
def make_mariadb_database(mariadb_server: dict[str, Any]) -> Iterator[Any]:
    """Factory of fresh, empty MariaDB databases, dropped at the end of the session."""
    made: list[str] = []

    def make() -> str:
        name = f"ampfleet_test_{os.getpid()}_{secrets.token_hex(3)}"
        with pymysql.connect(**mariadb_server) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        made.append(name)
        return (
            f"mysql+pymysql://root@{mariadb_server['host']}:{mariadb_server['port']}/"
            f"{name}?charset=utf8mb4"
        )

    yield make
    with pymysql.connect(**mariadb_server) as conn, conn.cursor() as cur:
        for name in made:
            # A pooled connection of a session-wide app still inside a transaction holds a
            # metadata lock that DROP DATABASE would wait on forever: end those first.
            cur.execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = %s AND id <> CONNECTION_ID()",
                (name,),
            )
            for (connection,) in cur.fetchall():
                with contextlib.suppress(pymysql.MySQLError):  # it may have ended meanwhile
                    cur.execute(f"KILL {int(connection)}")
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The records backend: every API test runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def app(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Flask:
    """The API on a migrated, seeded database of ``backend``."""
    data_dir = tmp_path_factory.mktemp(f"data-{backend}")
    if backend == "sqlite":
        url = f"sqlite:///{data_dir / 'ampfleet.db'}"
    else:
        url = request.getfixturevalue("make_mariadb_database")()
    upgrade(url)
    app = create_app(settings_for(data_dir, url))
    app.config["TESTING"] = True
    with get_database(app).transaction() as session:
        sync_catalogue(session)
        ensure_admin(
            session, app.extensions["ampfleet.hasher"], ADMIN_EMAIL, ADMIN_PASSWORD, data_dir
        )
    return app


@pytest.fixture
def client(app: Flask) -> Client:
    """An HTTP client of the API."""
    return Client(app.test_client())


@pytest.fixture
def admin(client: Client) -> Client:
    """The client signed in as the platform admin."""
    return client.signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def tenant(admin: Client) -> Tenant:
    """A fresh organization with helpers to populate it."""
    return Tenant.create(admin)


@pytest.fixture
def other_tenant(admin: Client) -> Tenant:
    """A second organization, to prove isolation."""
    return Tenant.create(admin)
