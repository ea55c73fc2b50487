"""Fixtures of the OCPP bridge tests: the bridge (``OcppWorker``) on the link's broker, the
workers that make its effects visible through the API (status, ingest, config/commands), an
observer of the contract messages it publishes, and charge points built on the ocpp library
speaking to it over real WebSockets (``tests/ocpp/chargers.py``)."""

from __future__ import annotations

import dataclasses
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.mosquitto.provisioner import MosquittoProvisioner
from broker.registry import active_accounts, device_ids
from cloud.commands.publisher import MqttCommandPublisher
from cloud.configuration.publisher import MqttPublisher
from cloud.configuration.worker import ConfigWorker
from cloud.db import get_database
from cloud.devicelink.accounts import bridge_password
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.devices.status_worker import StatusWorker
from cloud.ingest.families import FamilyDirectory
from cloud.ingest.worker import IngestWorker
from cloud.ocpp.bridges import bridge_status
from cloud.ocpp.worker import OcppWorker
from cloud.settings import Settings
from tests.ingest.test_pipeline import endpoint, wait_for
from tests.link import Link, app_settings
from tests.mqtt import Mqtt
from tests.ocpp.chargers import basic, connected
from tests.ocpp.pki import Authority


def bridge_endpoint(link: Link) -> Endpoint:
    """The OCPP bridge's account on ``link``'s broker."""
    settings = app_settings(link.app)
    return Endpoint(
        link.host, link.port, False, settings.broker_bridge_user, bridge_password(settings)
    )


@pytest.fixture
def make_bridge(link: Link) -> Iterator[Callable[..., OcppWorker]]:
    """Bridges on ``link``'s broker, listening on free ports; settings overrides as kwargs."""
    made: list[OcppWorker] = []

    if link.kind == "mosquitto":
        # The API's provisioner keeps the bridge's account (as `ampfleet broker resync` does).
        database = get_database(link.app)
        MosquittoProvisioner.from_settings(app_settings(link.app)).resync(
            active_accounts(database), registered=device_ids(database)
        )

    def make(**overrides: Any) -> OcppWorker:
        base = dict(app_settings(link.app).values)
        base.update(ocpp_port=0, ocpp_ping_interval=5, ocpp_call_timeout=5, **overrides)
        settings = Settings.load({k: v for k, v in base.items() if k != "public_url"})
        worker = OcppWorker(
            settings, get_database(link.app), bridge_endpoint(link), f"ocpp-{uuid.uuid4().hex[:8]}"
        )
        worker.start()
        made.append(worker)
        wait_for(worker.link.connected.is_set, what="bridge connected to the broker")
        return worker

    yield make
    for worker in made:
        worker.stop()


@pytest.fixture
def bridge(make_bridge: Callable[..., OcppWorker]) -> OcppWorker:
    """A bridge with security profile 1 (Basic auth over plain WebSocket)."""
    return make_bridge()


@pytest.fixture
def effects(link: Link, tmp_path: Path) -> Iterator[None]:
    """The status, ingest and config workers, and the API publishing on ``link``'s broker: what
    the bridge publishes shows in the API (status, telemetry, command results)."""
    saved = {
        key: link.app.extensions.get(key)
        for key in ("ampfleet.config_publisher", "ampfleet.command_publisher")
    }
    link.app.extensions["ampfleet.config_publisher"] = MqttPublisher(endpoint(link))
    link.app.extensions["ampfleet.command_publisher"] = MqttCommandPublisher(endpoint(link))
    database = get_database(link.app)
    shared = link.kind == "mosquitto"
    ids = [f"{role}-{uuid.uuid4().hex[:8]}" for role in ("status", "ingest", "config")]
    status = StatusWorker(
        database,
        endpoint(link),
        ids[0],
        tmp_path,
        shared_subscriptions=shared,
        gateways=bridge_status,
    )
    ingest = IngestWorker(
        link.app.extensions["ampfleet.telemetry"],
        endpoint(link),
        ids[1],
        tmp_path,
        shared_subscriptions=shared,
        batch_size=100,
        flush_ms=50,
        families=FamilyDirectory(database),
    )
    config = ConfigWorker(
        database, endpoint(link), ids[2], tmp_path, shared_subscriptions=shared, sweep_interval=3600
    )
    for worker in (status, ingest, config):
        worker.start()
    wait_for(status.connection.connected.is_set, what="status worker connected")
    wait_for(ingest.connection.connected.is_set, what="ingest worker connected")
    wait_for(config.connection.connected.is_set, what="config worker connected")
    yield
    for worker in (status, ingest, config):
        worker.stop()
    for client_id in ids:
        end_session(endpoint(link), client_id)
    link.app.extensions.update(saved)


@pytest.fixture
def observer(link: Link) -> Iterator[Mqtt]:
    """A service-account client following everything chargers publish (``af/+/...``)."""
    client = link.service()
    for channel in ("status", "events", "telemetry", "cmd/result", "config/reported", "ota/status"):
        assert not client.subscribe(f"af/+/{channel}").is_failure
    yield client
    client.close()


@pytest.fixture
def ocpp_charger(link: Link) -> Callable[..., tuple[str, str]]:
    """A registered OCPP charger with credentials: (id, password)."""

    def make(**fields: Any) -> tuple[str, str]:
        fields.setdefault("hardware_family", "ocpp-generic")
        return link.device(protocol="ocpp", **fields)

    return make


@dataclasses.dataclass
class Dial:
    """How a charger reaches a bridge of one security profile."""

    profile: int
    bridge: OcppWorker
    pki: Authority | None = None
    server_ca: str | None = None

    def connect(self, charger_id: str, password: str, version: str = "1.6") -> Any:
        """An async context manager: the charge point, connected the profile's way."""
        scheme = "ws" if self.profile == 1 else "wss"
        url = f"{scheme}://127.0.0.1:{self.bridge.port}"
        context = None
        if self.profile > 1:
            context = ssl.create_default_context(cafile=self.server_ca)
        if self.profile == 3:
            assert context is not None and self.pki is not None
            context.load_cert_chain(*self.pki.issue(charger_id))
            return connected(url, charger_id, version, ssl_context=context)
        return connected(
            url, charger_id, version, headers=basic(charger_id, password), ssl_context=context
        )


@pytest.fixture(params=[1, 2, 3], ids=["profile1", "profile2", "profile3"])
def dial(
    request: pytest.FixtureRequest, make_bridge: Callable[..., OcppWorker], tmp_path: Path
) -> Dial:
    """A bridge of each security profile (certificates made here), and how to reach it."""
    profile: int = request.param
    if profile == 1:
        return Dial(1, make_bridge())
    servers = Authority(tmp_path, "servers")
    cert, key = servers.issue("127.0.0.1", server=True)
    chargers = Authority(tmp_path, "chargers")
    tls = {"ocpp_tls_cert_file": cert, "ocpp_tls_key_file": key}
    if profile == 3:
        tls["ocpp_tls_client_ca_file"] = chargers.cert_file
    bridge = make_bridge(ocpp_security_profile=profile, **tls)
    return Dial(profile, bridge, chargers, servers.cert_file)
