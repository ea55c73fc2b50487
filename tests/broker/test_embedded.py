"""The embedded broker's own guarantees: configuration, TLS, sessions that a failed CONNECT
cannot disturb, the argon2 cache under reconnects, and ``ampfleet broker run``."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from paho.mqtt.reasoncodes import ReasonCode

from broker.embedded import (
    DURABLE_CHANNELS,
    SESSIONS_FILE,
    broker_config,
    listen_address,
    make_registry,
)
from broker.session_store import SessionStore
from cloud.db import Database
from cloud.devicelink.accounts import service_password
from cloud.settings import Settings, SettingsError
from firmware.core import contract
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.link import AppFactory, app_settings, link_settings
from tests.mqtt import Mqtt
from tests.services.amqtt_broker import EmbeddedBroker, free_port
from tests.services.mosquitto import make_tls_files


def issued(app: Flask) -> tuple[Client, str, str]:
    admin = Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
    device = Tenant.create(admin).device(state="active")
    body = admin.post(f"/devices/{device['id']}/credentials").get_json()
    return admin, device["id"], body["password"]


def test_only_our_plugins_are_loaded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    settings = Settings.load(link_settings(tmp_path, url, broker_url="mqtt://127.0.0.1:1999"))
    database = Database(settings.database_url)
    try:
        config = broker_config(settings, make_registry(settings, database))
    finally:
        database.engine.dispose()
    # amqtt's defaults include AnonymousAuthPlugin(allow_anonymous=True): it must not be there.
    assert list(config["plugins"]) == [
        "broker.amqtt_plugins.DeviceAuthPlugin",
        "broker.amqtt_plugins.DeviceTopicPlugin",
    ]
    assert config["listeners"]["default"]["bind"] == "127.0.0.1:1999"


def test_broker_url_names_the_listener() -> None:
    assert listen_address("mqtt://127.0.0.2:1884") == ("127.0.0.2", 1884, False)
    assert listen_address("mqtts://broker.local") == ("broker.local", 8883, True)
    for bad in ("http://x:1", "mqtt://", "mqtt://h:99999", "1883"):
        with pytest.raises(SettingsError, match="AMPFLEET_BROKER_URL"):
            listen_address(bad)


def test_tls_listener(make_app: AppFactory, tmp_path: Path) -> None:
    app = make_app()
    _, device_id, password = issued(app)
    ca, cert, key = make_tls_files(tmp_path)
    settings = app_settings(app)
    tls_port = free_port()
    overrides = link_settings(
        settings.data_path,
        settings.database_url,
        broker_tls_port=tls_port,
        broker_tls_cert_file=str(cert),
        broker_tls_key_file=str(key),
    )
    with EmbeddedBroker(overrides) as broker:
        with Mqtt(broker.host, tls_port, device_id, password, ca_file=str(ca)).connected() as c:
            assert not c.subscribe(f"af/{device_id}/cmd").is_failure
            assert c.subscribe("#").is_failure
        wrong = Mqtt(broker.host, tls_port, device_id, "wrong", ca_file=str(ca))
        try:
            assert wrong.connect().is_failure
        finally:
            wrong.close()


@pytest.mark.parametrize("clean_session", [True, False])
def test_a_refused_connect_cannot_touch_the_device_session(
    embedded_link_parts: tuple[Flask, EmbeddedBroker], clean_session: bool
) -> None:
    app, broker = embedded_link_parts
    admin, device_id, password = issued(app)
    settings = app_settings(app)
    with Mqtt(broker.host, broker.port, device_id, password).connected() as device:
        assert not device.subscribe(f"af/{device_id}/cmd").is_failure
        intruder = Mqtt(broker.host, broker.port, device_id, "guessed", clean_session=clean_session)
        try:
            assert intruder.connect().is_failure
        finally:
            intruder.close()
        assert not device.wait_disconnected(0.5)  # not taken over
        with Mqtt(
            broker.host,
            broker.port,
            settings.broker_service_user,
            service_password(settings),
            client_id="svc-" + secrets.token_hex(3),
        ).connected() as service:
            service.publish(f"af/{device_id}/cmd", b"still here?")
        assert device.expect().payload == b"still here?"  # subscriptions intact
        assert admin.delete(f"/devices/{device_id}/credentials").status_code == 204
        assert device.wait_disconnected(5)  # and the watchdog still finds the session


def test_reconnects_reuse_the_verified_secret(
    embedded_link_parts: tuple[Flask, EmbeddedBroker],
) -> None:
    app, broker = embedded_link_parts
    _, device_id, password = issued(app)
    assert broker.registry is not None
    before = broker.registry.argon2_checks
    for _ in range(10):
        Mqtt(broker.host, broker.port, device_id, password).connected().close()
    assert broker.registry.argon2_checks - before == 1


def test_ampfleet_broker_run(make_app: AppFactory) -> None:
    """`ampfleet broker run` lets devices in only once the workers' durable subscriptions are
    in place (before, it would acknowledge samples nobody receives), and keeps the sessions in
    a private file when stopped."""
    app = make_app()
    _, device_id, password = issued(app)
    settings = app_settings(app)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AMPFLEET_")},
        "AMPFLEET_DATA_DIR": str(settings.data_path),
        "AMPFLEET_DATABASE_URL": settings.database_url,
        "AMPFLEET_TESTING": "true",
        "AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests",
        "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{port}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cloud.cli", "broker", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def device_connack() -> ReasonCode:
        client = Mqtt("127.0.0.1", port, device_id, password)
        try:
            return client.connect()
        finally:
            client.close()

    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                first = device_connack()
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the broker did not come up"
                time.sleep(0.1)
        assert first.is_failure and "unavailable" in str(first).lower(), str(first)
        workers_id = "ampfleet-workers-" + secrets.token_hex(3)
        workers = Mqtt(
            "127.0.0.1",
            port,
            settings.broker_service_user,
            service_password(settings),
            client_id=workers_id,
            clean_session=False,
        )
        with workers.connected():
            for channel in DURABLE_CHANNELS[:-1]:
                assert not workers.subscribe(contract.topic("+", channel)).is_failure
            assert device_connack().is_failure  # one channel still has no durable subscriber
            assert not workers.subscribe(contract.topic("+", DURABLE_CHANNELS[-1])).is_failure
            assert not device_connack().is_failure
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    sessions = settings.data_path / SESSIONS_FILE
    assert sessions.stat().st_mode & 0o777 == 0o600
    assert [s.client_id for s in SessionStore(sessions).take()] == [
        workers.client._client_id.decode()
    ]


def test_a_broadcast_survives_subscriptions_changing_under_it() -> None:
    """amqtt 0.12.1 iterates its subscription table while awaiting; the broker's table must
    tolerate a filter being added or removed meanwhile (a client connecting or leaving)."""
    from broker.embedded import _Subscriptions

    table = _Subscriptions({"af/a/cmd": [], "af/b/cmd": []})
    for name in table:  # what _del_all_subscriptions does while a broadcast is suspended
        del table[name]
        table["af/c/cmd"] = []
    for name, _ in table.items():
        table.pop(name)
    assert table == {}
