"""Two processes making the PKI at the same moment (two API workers' first requests) end with
one root, one device CA and one CRL that both use: on SQLite and on MariaDB."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cloud.db import Database
from cloud.models import Base
from cloud.pki import authorities
from cloud.pki.models import PkiAuthority, PkiCrl, PkiKey
from tests.pki.support import pki_settings

PKI_TABLES = ("pki_keys", "pki_authorities", "pki_crls")


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ampfleet.db'}"
    else:
        make: Callable[[], str] = request.getfixturevalue("make_mariadb_database")
        url = make()
    database = Database(url)
    # The PKI's tables and the audit log only: a whole schema costs MariaDB seconds.
    tables = [Base.metadata.tables[name] for name in (*PKI_TABLES, "organizations", "audit_log")]
    Base.metadata.create_all(database.engine, tables=tables)
    return database


def test_two_processes_making_the_authorities_at_once_agree(
    database: Database, tmp_path: Path
) -> None:
    settings = pki_settings(tmp_path / "data", database.url)
    both_looked = threading.Barrier(2, timeout=30)
    chains: list[str] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            with database.transaction() as session:
                # Both look before either writes: each sees no PKI and makes one.
                assert authorities.existing(session) is None
                both_looked.wait()
                chains.append(authorities.ensure(session, settings).chain_pem)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(chains) == 2 and chains[0] == chains[1]
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(PkiKey)) == 2
        assert session.scalar(select(func.count()).select_from(PkiAuthority)) == 2
        assert session.scalar(select(func.count()).select_from(PkiCrl)) == 1
        assert authorities.ensure(session, settings).chain_pem == chains[0]
    database.engine.dispose()
