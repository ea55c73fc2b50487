"""Fixtures: a real influxd for the session, and a fresh store per test on every backend.

``store`` runs each test once on SQLite (a file in the test's temporary directory) and once on
the real InfluxDB 1.6.7 through the v1 write API (a database of its own, dropped afterwards).
Both come from ``open_store``, as the platform builds them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.settings import Settings
from cloud.telemetry.influx import InfluxStore
from cloud.telemetry.store import TelemetryStore, open_store
from tests.services.influxd import Influxd

BACKENDS = ["sqlite", "influxdb-v1"]


def store_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a store under test: files in ``data_dir``, the environment ignored."""
    return Settings.load({"data_dir": data_dir, **overrides}, environ={})


def influx_store(server: Influxd, **options: Any) -> InfluxStore:
    """An InfluxDB store on a fresh database of ``server`` (v1 writes unless told)."""
    options.setdefault("api", "v1")
    options.setdefault("timeout_s", 5.0)
    return InfluxStore(server.url, f"t_{uuid.uuid4().hex}", **options)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetryStore]:
    """A fresh, empty store of each backend."""
    if request.param == "sqlite":
        opened = open_store(store_settings(tmp_path, telemetry_store="sqlite"))
        yield opened
        opened.close()
        return
    server: Influxd = request.getfixturevalue("influxd")
    opened = open_store(
        store_settings(
            tmp_path,
            telemetry_store="influxdb",
            influxdb_url=server.url,
            influxdb_api="v1",
            influxdb_bucket=f"t_{uuid.uuid4().hex}",
        )
    )
    assert isinstance(opened, InfluxStore)
    yield opened
    if server.running:
        opened.drop_database()
    opened.close()
