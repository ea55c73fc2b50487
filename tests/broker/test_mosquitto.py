"""Mosquitto specifics: resync (idempotent, repairs drift), an unreachable broker, TLS, restarts.

Each test gets its own Mosquitto and its own API (``broker=external``) so that it may break
things behind the provisioner's back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from broker.admin import ResyncReport
from broker.errors import BrokerUnavailable
from broker.mosquitto.provisioner import MosquittoProvisioner
from broker.registry import active_accounts, device_ids
from cloud.db import get_database
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Client, Tenant
from tests.link import AppFactory
from tests.mqtt import Mqtt
from tests.services.mosquitto import Mosquitto


@dataclasses.dataclass
class Setup:
    server: Mosquitto
    app: Flask
    tenant: Tenant

    @property
    def admin(self) -> Client:
        return self.tenant.admin

    def device(self, **fields: Any) -> tuple[str, str]:
        device = self.tenant.device(state="active", **fields)
        body = self.admin.post(f"/devices/{device['id']}/credentials").get_json()
        return device["id"], body["password"]

    def resync(self) -> ResyncReport:
        database = get_database(self.app)
        return self.server.provisioner().resync(
            active_accounts(database), registered=device_ids(database)
        )

    def snapshot(self) -> tuple[Any, Any]:
        return self.server.provisioner().state()

    def control(self, *commands: dict[str, Any]) -> None:
        for answer in self.server.provisioner().execute(list(commands)):
            assert "error" not in answer, answer

    def mqtt(self, username: str, password: str, **kwargs: Any) -> Mqtt:
        return Mqtt(self.server.host, self.server.port, username, password, **kwargs)

    def connects(self, username: str, password: str) -> bool:
        client = self.mqtt(username, password)
        try:
            return not client.connect().is_failure
        finally:
            client.close()


@pytest.fixture
def setup(make_app: AppFactory) -> Iterator[Setup]:
    with Mosquitto() as server:
        app = make_app(
            broker="external",
            broker_url=server.url,
            broker_admin_user=server.admin_user,
            broker_admin_password=server.admin_password,
            broker_service_user=server.service_user,
            broker_service_password=server.service_password,
        )
        admin = Client(app.test_client()).signed_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        yield Setup(server, app, Tenant.create(admin))


def test_resync_is_idempotent(setup: Setup) -> None:
    a, _ = setup.device()
    b, _ = setup.device()
    assert setup.admin.patch(f"/devices/{b}", json={"state": "suspended"}).status_code == 200
    first = setup.resync()
    assert first.disabled == [b] and not first.needs_rotation
    before = setup.snapshot()
    second = setup.resync()
    assert not second.changed and second == ResyncReport()
    assert setup.snapshot() == before
    assert setup.connects(setup.server.service_user, setup.server.service_password)
    assert a in before[0] and before[0][b].disabled


def test_resync_repairs_what_drifted_behind_its_back(setup: Setup) -> None:
    server = setup.server
    a, password = setup.device()
    revoked, revoked_password = setup.device()
    path = f"/devices/{revoked}/credentials"
    assert setup.admin.delete(path).status_code == 204
    lost, _ = setup.device()
    setup.control(
        # Someone deletes the service account and loosens a device's role...
        {"command": "deleteClient", "username": server.service_user},
        {
            "command": "modifyRole",
            "rolename": f"af-device-{a}",
            "acls": [{"acltype": "subscribePattern", "topic": "#", "allow": True}],
        },
        {"command": "disableClient", "username": a},
        # ...recreates the revoked device by hand, loses another one, adds their own account.
        {
            "command": "createClient",
            "username": revoked,
            "password": revoked_password,
            "clientid": revoked,
            "roles": [{"rolename": "ampfleet-service"}],
        },
        {"command": "deleteClient", "username": lost},
        {"command": "createClient", "username": "operator-probe", "password": "probe-pw"},
    )
    assert not setup.connects(server.service_user, server.service_password)
    assert setup.connects(revoked, revoked_password)

    report = setup.resync()
    assert report.removed == [revoked]
    assert report.enabled == [a]
    assert report.needs_rotation == [lost]  # only its hash is stored: it needs a rotation
    assert report.foreign == ["operator-probe"]
    assert any("service account" in r for r in report.repaired)
    assert any(f"af-device-{a}" in r for r in report.repaired)

    assert setup.connects(server.service_user, server.service_password)
    assert not setup.connects(revoked, revoked_password)
    assert setup.connects("operator-probe", "probe-pw")  # not ours: untouched
    with setup.mqtt(a, password).connected() as device:
        assert device.subscribe("#").is_failure  # the role is the contract's again
        assert not device.subscribe(f"af/{a}/cmd").is_failure

    rotated = setup.admin.post(f"/devices/{lost}/credentials/rotate").get_json()
    assert rotated["broker_synced"] is True
    assert setup.connects(lost, rotated["password"])
    assert not setup.resync().changed


def test_api_succeeds_while_the_broker_is_down_and_resync_catches_up(setup: Setup) -> None:
    kept, kept_password = setup.device()
    doomed, doomed_password = setup.device()
    setup.server.stop()
    fresh = setup.tenant.device(state="active")
    issued = setup.admin.post(f"/devices/{fresh['id']}/credentials")
    assert issued.status_code == 201 and issued.get_json()["broker_synced"] is False
    assert setup.admin.delete(f"/devices/{doomed}/credentials").status_code == 204
    rotated = setup.admin.post(f"/devices/{kept}/credentials/rotate")
    assert rotated.status_code == 200 and rotated.get_json()["broker_synced"] is False
    setup.server.start()

    assert setup.connects(doomed, doomed_password)  # the broker missed the revocation
    assert setup.connects(kept, kept_password)  # and the rotation
    report = setup.resync()
    assert report.removed == [doomed]
    assert sorted(report.needs_rotation) == sorted([fresh["id"], kept])
    assert not setup.connects(doomed, doomed_password)
    assert not setup.connects(kept, kept_password)  # the old secret is off

    again = setup.admin.post(f"/devices/{kept}/credentials/rotate").get_json()
    assert again["broker_synced"] is True and setup.connects(kept, again["password"])


def test_accounts_survive_a_restart(setup: Setup) -> None:
    device_id, password = setup.device()
    setup.server.stop()
    setup.server.start()
    assert setup.connects(device_id, password)
    assert "not writable" not in setup.server.log_tail(200)


def test_the_tls_listener_serves_the_same_accounts(setup: Setup) -> None:
    device_id, password = setup.device()
    server = setup.server
    with Mqtt(
        server.host, server.tls_port, device_id, password, ca_file=str(server.ca_file)
    ).connected() as device:
        assert not device.subscribe(f"af/{device_id}/cmd").is_failure
        assert device.subscribe("#").is_failure
    anonymous = Mqtt(server.host, server.tls_port, None, None, "x", ca_file=str(server.ca_file))
    try:
        assert anonymous.connect().is_failure
    finally:
        anonymous.close()


def test_resync_through_the_cli(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cloud.cli import main

    device_id, password = setup.device()
    setup.control({"command": "disableClient", "username": device_id})
    settings = setup.app.extensions["ampfleet.settings"]
    for name, value in settings.values.items():
        monkeypatch.setenv(
            f"AMPFLEET_{name.upper()}",
            str(value).lower() if isinstance(value, bool) else str(value),
        )
    result = CliRunner().invoke(main, ["broker", "resync"])
    assert result.exit_code == 0, result.output
    assert f"enabled: {device_id}" in result.output
    assert setup.connects(device_id, password)
    result = CliRunner().invoke(main, ["broker", "resync"])
    assert result.exit_code == 0 and "nothing to change" in result.output


def test_disconnect_and_remove_are_idempotent(setup: Setup) -> None:
    device_id, password = setup.device()
    provisioner = setup.server.provisioner()
    with setup.mqtt(device_id, password).connected() as device:
        provisioner.disconnect(device_id)
        assert device.wait_disconnected(5)
    assert setup.connects(device_id, password)  # a disconnection is not a ban
    provisioner.remove_device(device_id)
    provisioner.remove_device(device_id)  # already gone: nothing to complain about
    provisioner.disconnect(device_id)
    assert not setup.connects(device_id, password)


def test_a_wrong_admin_password_is_reported_as_unavailable(setup: Setup) -> None:
    server = setup.server
    provisioner = MosquittoProvisioner(
        server.host,
        server.port,
        admin_user=server.admin_user,
        admin_password="wrong",
        service_user=server.service_user,
        service_password=server.service_password,
    )
    with pytest.raises(BrokerUnavailable, match="admin login refused"):
        provisioner.state()
