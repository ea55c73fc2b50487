"""broker.registry.DeviceRegistry against the records database, on SQLite and on MariaDB.

The embedded broker's authentication decisions, its cache of argon2 verifications, the
re-check that finds devices to disconnect, and the accounts a resync wants.
"""

from __future__ import annotations

from flask import Flask

from broker.registry import DeviceRegistry, Identity, active_accounts, device_ids
from cloud.db import get_database
from cloud.devices.credentials import DeviceCredential, credential_version
from tests.helpers import Tenant

SERVICE_USER, SERVICE_PASSWORD = "ampfleet-service", "service-password-for-tests"


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(app: Flask, clock: Clock | None = None) -> DeviceRegistry:
    return DeviceRegistry(
        get_database(app),
        app.extensions["ampfleet.hasher"],
        SERVICE_USER,
        SERVICE_PASSWORD,
        cache_ttl=30,
        clock=clock or Clock(),
    )


def issued(tenant: Tenant, **fields: object) -> tuple[str, str]:
    device = tenant.device(**fields)
    answer = tenant.admin.post(f"/devices/{device['id']}/credentials")
    assert answer.status_code == 201
    return device["id"], answer.get_json()["password"]


def test_devices_and_the_service_account_authenticate(app: Flask, tenant: Tenant) -> None:
    device_id, password = issued(tenant)
    gate = registry(app)
    decision = gate.authenticate(device_id, password, device_id)
    assert decision.identity is not None and not decision.identity.is_service
    assert gate.authenticate(device_id, password.encode(), device_id).identity is not None
    service = gate.authenticate(SERVICE_USER, SERVICE_PASSWORD, "ingest-1").identity
    assert service == Identity(SERVICE_USER, is_service=True)


def test_everything_else_is_refused_with_a_reason(app: Flask, tenant: Tenant) -> None:
    device_id, password = issued(tenant)
    no_credentials = tenant.device()["id"]
    gate = registry(app)
    cases = {
        "anonymous": (None, None, "x"),
        "empty username": ("", password, ""),
        "no password": (device_id, None, device_id),
        "wrong secret": (device_id, password[:-1], device_id),
        "other client id": (device_id, password, "someone-else"),
        "not a device id": ("a/b", password, "a/b"),
        "unknown device": ("nobody-here", password, "nobody-here"),
        "device without credentials": (no_credentials, password, no_credentials),
        "wrong service password": (SERVICE_USER, "nope", "svc"),
        "undecodable password": (device_id, b"\xff\xfe", device_id),
    }
    for case, (username, secret, client_id) in cases.items():
        decision = gate.authenticate(username, secret, client_id)
        assert decision.identity is None, case
        assert decision.reason, case


def test_revoked_suspended_and_decommissioned_devices_are_refused(
    app: Flask, tenant: Tenant
) -> None:
    gate = registry(app)
    revoked, revoked_password = issued(tenant, state="active")
    tenant.admin.delete(f"/devices/{revoked}/credentials")
    assert gate.authenticate(revoked, revoked_password, revoked).reason == "credential revoked"
    for state in ("suspended", "decommissioned"):
        device_id, password = issued(tenant, state="active")
        assert gate.authenticate(device_id, password, device_id).identity is not None
        tenant.admin.patch(f"/devices/{device_id}", json={"state": state})
        assert gate.authenticate(device_id, password, device_id).reason == f"device is {state}"


def test_a_reconnect_storm_costs_one_argon2_per_device(app: Flask, tenant: Tenant) -> None:
    clock = Clock()
    gate = registry(app, clock)
    device_id, password = issued(tenant)
    for _ in range(50):
        assert gate.authenticate(device_id, password, device_id).identity is not None
    assert gate.argon2_checks == 1
    # A wrong password never rides on the cached verification.
    assert gate.authenticate(device_id, password + "x", device_id).identity is None
    assert gate.argon2_checks == 2
    clock.now += 31  # the cache entry expired
    assert gate.authenticate(device_id, password, device_id).identity is not None
    assert gate.argon2_checks == 3
    # A rotation changes the hash: the cached verification of the old secret is worthless.
    new = tenant.admin.post(f"/devices/{device_id}/credentials/rotate").get_json()["password"]
    assert gate.authenticate(device_id, password, device_id).identity is None
    assert gate.authenticate(device_id, new, device_id).identity is not None


def test_stale_names_the_sessions_to_disconnect(app: Flask, tenant: Tenant) -> None:
    gate = registry(app)
    grants = {}
    devices = {}
    for name in ("kept", "revoked", "rotated", "suspended", "deleted"):
        device_id, password = issued(tenant, state="active")
        identity = gate.authenticate(device_id, password, device_id).identity
        assert identity is not None
        grants[device_id] = identity
        devices[name] = device_id
    grants["ingest-1"] = Identity(SERVICE_USER, is_service=True)
    admin = tenant.admin
    admin.delete(f"/devices/{devices['revoked']}/credentials")
    admin.post(f"/devices/{devices['rotated']}/credentials/rotate")
    admin.patch(f"/devices/{devices['suspended']}", json={"state": "suspended"})
    admin.delete(f"/devices/{devices['deleted']}")
    expected = sorted(devices[n] for n in ("revoked", "rotated", "suspended", "deleted"))
    assert gate.stale(grants) == expected


def test_active_accounts_list_what_a_resync_wants(app: Flask, tenant: Tenant) -> None:
    active, _ = issued(tenant, state="active")
    suspended, _ = issued(tenant, state="suspended")
    revoked, _ = issued(tenant)
    tenant.admin.delete(f"/devices/{revoked}/credentials")
    bare = tenant.device()["id"]
    database = get_database(app)
    ours = {a.device_id: a for a in active_accounts(database, only=[active, suspended, revoked])}
    assert set(ours) == {active, suspended}
    assert ours[active].enabled and not ours[suspended].enabled
    assert ours[active].password is None
    with database.session() as session:
        row = session.get(DeviceCredential, active)
        assert row is not None and ours[active].version == credential_version(row.secret_hash)
    assert {active, suspended, revoked, bare} <= device_ids(database)
