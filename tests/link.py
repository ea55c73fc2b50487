"""Fixtures of the device link (a pytest plugin): real brokers provisioned through the API.

``link`` runs a test twice: against the embedded broker (amqtt in a thread, reading an API's
SQLite registry) and against a real Mosquitto provisioned by an API configured with
``broker=external``. The brokers and their APIs live for the session; each test gets a fresh
organization (``link.tenant``) and a fresh admin token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from flask import Flask

from broker.registry import active_accounts, device_ids
from cloud.app import create_app
from cloud.configuration.worker import ConfigWorker
from cloud.db import get_database
from cloud.db.migrate import upgrade
from cloud.devicelink.accounts import service_password
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import ThreadedLink, end_session
from cloud.identity.seed import ensure_admin, sync_catalogue
from cloud.pki import authorities, crl
from cloud.settings import Settings
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.helpers import settings_for as link_settings
from tests.mqtt import Mqtt
from tests.services.amqtt_broker import EmbeddedBroker
from tests.services.influxd import INFLUXD, Influxd
from tests.services.mosquitto import Mosquitto

AppFactory = Callable[..., Flask]


class Worker(Protocol):
    """What the device-link workers have in common, for ``running_worker``."""

    connection: ThreadedLink

    def start(self) -> None: ...

    def stop(self) -> None: ...


W = TypeVar("W", bound=Worker)


@contextlib.contextmanager
def running_worker(
    link: Link, kind: Callable[..., W], name: str, data_dir: Path, **options: Any
) -> Iterator[W]:
    """A device-link worker of ``kind`` (status, config, charging, ...) on ``link``'s broker,
    connected; its broker session is ended afterwards so no later test shares its traffic."""
    client_id = f"{name}-{secrets.token_hex(4)}"
    worker = kind(
        get_database(link.app),
        link.endpoint(),
        client_id,
        data_dir,
        shared_subscriptions=link.kind == "mosquitto",
        **options,
    )
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not worker.connection.connected.is_set():
            assert time.monotonic() < deadline, f"{name} worker did not connect"
            time.sleep(0.05)
        yield worker
    finally:
        worker.stop()
        end_session(link.endpoint(), client_id)


def running_config_worker(
    link: Link, data_dir: Path
) -> contextlib.AbstractContextManager[ConfigWorker]:
    """A config worker on ``link``'s broker; its sweep waits an hour (tests sweep it by hand)."""
    return running_worker(link, ConfigWorker, "config", data_dir, sweep_interval=3600)


@pytest.fixture(scope="session")
def make_app(tmp_path_factory: pytest.TempPathFactory) -> AppFactory:
    """Factory of API apps on fresh, migrated, seeded SQLite databases."""

    def make(**overrides: Any) -> Flask:
        data_dir = tmp_path_factory.mktemp("link")
        url = f"sqlite:///{data_dir / 'ampfleet.db'}"
        upgrade(url)
        app = create_app(link_settings(data_dir, url, **overrides))
        app.config["TESTING"] = True
        with get_database(app).transaction() as session:
            sync_catalogue(session)
            ensure_admin(
                session, app.extensions["ampfleet.hasher"], ADMIN_EMAIL, ADMIN_PASSWORD, data_dir
            )
        return app

    return make


def mtls_app(make: AppFactory, mosquitto: Mosquitto, ca_file: Path, crl_file: Path) -> Flask:
    """An API provisioning ``mosquitto`` as production does: certificates only (device
    passwords off), the factory whitelist, and the PKI's CA chain and CRL written to the files
    the broker's mutual-TLS listener reads (what `ampfleet pki init` does before it starts)."""
    app = make(
        broker="external",
        broker_url=mosquitto.url,
        broker_admin_user=mosquitto.admin_user,
        broker_admin_password=mosquitto.admin_password,
        broker_service_user=mosquitto.service_user,
        broker_service_password=mosquitto.service_password,
        broker_device_passwords="false",
        device_approval="whitelist",
        pki_ca_file=str(ca_file),
        pki_crl_file=str(crl_file),
    )
    settings = app_settings(app)
    with get_database(app).transaction() as session:
        authorities.ensure(session, settings)
        crl.current(session, settings)
    with get_database(app).transaction() as session:
        crl.write_current(session, settings)
    return app


def app_settings(app: Flask) -> Settings:
    """The settings an app runs with."""
    settings: Settings = app.extensions["ampfleet.settings"]
    return settings


@dataclasses.dataclass
class Link:
    """A broker under test and the API that provisions it."""

    kind: str  # "embedded" or "mosquitto"
    host: str
    port: int
    app: Flask
    admin: Client
    tenant: Tenant
    service_user: str
    service_password: str
    # What an ingest worker subscribes to: shared on Mosquitto; amqtt has no $share.
    ingest_filter: str
    _sync: Callable[[], None]

    def device(self, **fields: Any) -> tuple[str, str]:
        """A new device of the tenant with credentials issued through the API: (id, password)."""
        device = self.tenant.device(state="active", **fields)
        issued = self.admin.post(f"/devices/{device['id']}/credentials")
        assert issued.status_code == 201, issued.get_json()
        body = issued.get_json()
        assert body["broker_synced"] is True
        return device["id"], body["password"]

    def endpoint(self) -> Endpoint:
        """The service account's endpoint on this broker (what the workers connect with)."""
        return Endpoint(self.host, self.port, False, self.service_user, self.service_password)

    def mqtt(self, username: str | None, password: str | None, **kwargs: Any) -> Mqtt:
        """A client of this broker (not yet connected)."""
        return Mqtt(self.host, self.port, username, password, **kwargs)

    def service(self) -> Mqtt:
        """A connected client of the cloud's service account."""
        client_id = f"{self.service_user}-{secrets.token_hex(3)}"
        return self.mqtt(self.service_user, self.service_password, client_id=client_id).connected()

    def sync(self) -> None:
        """Apply registry changes the devices API does not push (lifecycle state) to the broker:
        a resync on Mosquitto; nothing on the embedded broker, which reads the registry."""
        self._sync()


@pytest.fixture(scope="session")
def embedded_link_parts(make_app: AppFactory) -> Iterator[tuple[Flask, EmbeddedBroker]]:
    """An API (broker=embedded) and the embedded broker reading its registry."""
    app = make_app()
    settings = app_settings(app)
    broker = EmbeddedBroker(
        link_settings(settings.data_path, settings.database_url, log_level="WARNING")
    )
    with broker:
        yield app, broker


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One real influxd for the whole session (tests use databases of their own)."""
    if not os.access(INFLUXD, os.X_OK):
        pytest.fail(f"{INFLUXD} is missing: run scripts/services.sh")
    with Influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A real Mosquitto with the project's configuration."""
    with Mosquitto() as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto_app(make_app: AppFactory, mosquitto: Mosquitto) -> Flask:
    """An API (broker=external) that provisions ``mosquitto``."""
    return make_app(
        broker="external",
        broker_url=mosquitto.url,
        broker_admin_user=mosquitto.admin_user,
        broker_admin_password=mosquitto.admin_password,
        broker_service_user=mosquitto.service_user,
        broker_service_password=mosquitto.service_password,
    )


def resync_mosquitto(app: Flask, server: Mosquitto) -> None:
    """What `ampfleet broker resync` does, for ``app``'s registry."""
    database = get_database(app)
    server.provisioner().resync(active_accounts(database), registered=device_ids(database))


def _admin(app: Flask) -> Client:
    return Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(params=["embedded", "mosquitto"])
def link(request: pytest.FixtureRequest) -> Link:
    """The broker under test, embedded or Mosquitto, with a fresh organization."""
    if request.param == "embedded":
        app, broker = request.getfixturevalue("embedded_link_parts")
        admin = _admin(app)
        return Link(
            "embedded",
            broker.host,
            broker.port,
            app,
            admin,
            Tenant.create(admin),
            app_settings(app).broker_service_user,
            service_password(app_settings(app)),
            "af/+/telemetry",
            lambda: None,
        )
    server: Mosquitto = request.getfixturevalue("mosquitto")
    app = request.getfixturevalue("mosquitto_app")
    admin = _admin(app)
    return Link(
        "mosquitto",
        server.host,
        server.port,
        app,
        admin,
        Tenant.create(admin),
        server.service_user,
        server.service_password,
        "$share/ingest/af/+/telemetry",
        lambda: resync_mosquitto(app, server),
    )
