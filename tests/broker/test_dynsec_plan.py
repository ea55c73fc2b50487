"""broker.mosquitto.dynsec.plan, the I/O-free reconcile core, and the generated configuration."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest

from broker.admin import CERTIFICATE_ONLY, DeviceAccount
from broker.mosquitto import dynsec
from broker.mosquitto.config import (
    MosquittoConfig,
    initial_dynsec,
    password_hash,
    render,
    seed_devices,
)
from broker.mosquitto.dynsec import ClientState, plan

SERVICE = {"service_user": "svc", "service_password": "svc-pw", "admin_user": "adm"}


Clients = dict[str, ClientState]
Roles = dict[str, list[dict[str, Any]]]


def broker_after(
    commands: list[dict[str, Any]], clients: Clients, roles: Roles
) -> tuple[Clients, Roles]:
    """A faithful little model of what the commands do to Mosquitto's accounts."""
    clients, roles = dict(clients), dict(roles)
    for c in commands:
        name = str(c.get("username", ""))
        match c["command"]:
            case "createRole" | "modifyRole":
                roles[str(c["rolename"])] = list(c["acls"])
            case "deleteRole":
                roles.pop(str(c["rolename"]))
            case "createClient":
                assert name not in clients
                clients[name] = ClientState(
                    name,
                    c.get("clientid"),
                    c.get("textname"),
                    False,
                    tuple(r["rolename"] for r in c["roles"]),
                )
            case "modifyClient":
                old = clients[name]
                clients[name] = ClientState(
                    name,
                    c.get("clientid", old.clientid),
                    c.get("textname", old.textname),
                    old.disabled,
                    tuple(r["rolename"] for r in c["roles"]) if "roles" in c else old.roles,
                )
            case "setClientId":
                old = clients[name]
                clients[name] = ClientState(
                    name, c.get("clientid"), old.textname, old.disabled, old.roles
                )
            case "enableClient" | "disableClient":
                old = clients[name]
                clients[name] = ClientState(
                    name, old.clientid, old.textname, c["command"] == "disableClient", old.roles
                )
            case "deleteClient":
                clients.pop(name)
            case other:
                raise AssertionError(other)
    return clients, roles


def fresh_broker() -> tuple[Clients, Roles]:
    return broker_after(plan({}, {}, [], **SERVICE).commands, {}, {})


def test_a_fresh_broker_gets_the_service_account_and_devices_with_known_passwords() -> None:
    clients, roles = fresh_broker()
    assert set(clients) == {"svc"} and set(roles) == {dynsec.SERVICE_ROLE}
    devices = [DeviceAccount("d1", "v1", True, "pw1"), DeviceAccount("d2", "v2", False, "pw2")]
    result = plan(clients, roles, devices, **SERVICE)
    assert result.report.created == ["d1", "d2"]
    clients, roles = broker_after(result.commands, clients, roles)
    assert clients["d1"] == ClientState("d1", "d1", "ampfleet:device:v1", False, ("af-device-d1",))
    assert clients["d2"].disabled  # suspended devices keep an account, disabled
    second = plan(
        clients, roles, [DeviceAccount("d1", "v1"), DeviceAccount("d2", "v2", False)], **SERVICE
    )
    assert second.commands == [] and not second.report.changed


def test_a_lost_account_cannot_be_restored_without_its_password() -> None:
    clients, roles = fresh_broker()
    result = plan(clients, roles, [DeviceAccount("d1", "v1")], **SERVICE)
    assert result.report.needs_rotation == ["d1"] and result.commands == []


def test_a_stale_password_is_disabled_until_a_rotation_brings_the_new_one() -> None:
    clients, roles = fresh_broker()
    clients, roles = broker_after(
        plan(clients, roles, [DeviceAccount("d1", "v1", True, "old")], **SERVICE).commands,
        clients,
        roles,
    )
    stale = plan(clients, roles, [DeviceAccount("d1", "v2")], **SERVICE)
    assert stale.report.needs_rotation == ["d1"] and stale.report.disabled == ["d1"]
    clients, roles = broker_after(stale.commands, clients, roles)
    again = plan(clients, roles, [DeviceAccount("d1", "v2")], **SERVICE)
    assert again.commands == []  # idempotent while waiting for the rotation
    rotated = plan(clients, roles, [DeviceAccount("d1", "v3", True, "new")], **SERVICE)
    assert [c["command"] for c in rotated.commands] == ["modifyClient", "enableClient"]
    assert rotated.commands[0]["password"] == "new"


def test_drift_is_repaired_and_foreign_accounts_are_left_alone() -> None:
    clients, roles = fresh_broker()
    clients, roles = broker_after(
        plan(clients, roles, [DeviceAccount("d1", "v1", True, "pw")], **SERVICE).commands,
        clients,
        roles,
    )
    clients["svc"] = ClientState("svc", "bound", "ampfleet:service:old", True, ())
    clients["d1"] = ClientState("d1", "other", "ampfleet:device:v1", True, ())
    clients["ghost"] = ClientState(
        "ghost", "ghost", "ampfleet:device:v0", False, ("af-device-ghost",)
    )
    clients["grafana"] = ClientState("grafana", None, "made by an operator", False, ("x",))
    roles["af-device-d1"] = [{"acltype": "subscribePattern", "topic": "#", "allow": True}]
    roles["af-device-ghost"] = []
    result = plan(clients, roles, [DeviceAccount("d1", "v1")], **SERVICE)
    assert result.report.removed == ["ghost"] and result.report.foreign == ["grafana"]
    assert result.report.updated == ["d1"] and result.report.enabled == ["d1"]
    clients, roles = broker_after(result.commands, clients, roles)
    assert clients["d1"] == ClientState("d1", "d1", "ampfleet:device:v1", False, ("af-device-d1",))
    assert dynsec.acl_key(roles["af-device-d1"]) == dynsec.acl_key(dynsec.device_acls("d1"))
    assert clients["svc"].roles == (dynsec.SERVICE_ROLE,) and not clients["svc"].disabled
    assert clients["svc"].clientid is None and "grafana" in clients and "ghost" not in clients
    assert plan(clients, roles, [DeviceAccount("d1", "v1")], **SERVICE).commands == []


def test_an_upsert_removes_nothing() -> None:
    clients, roles = fresh_broker()
    clients["other"] = ClientState(
        "other", "other", "ampfleet:device:v", False, ("af-device-other",)
    )
    result = plan(
        clients, roles, [DeviceAccount("d1", "v1", True, "pw")], complete=False, **SERVICE
    )
    assert result.report.removed == [] and "other" not in str(result.commands)


def test_initial_document_hashes_passwords_as_mosquitto_does() -> None:
    stored = password_hash("secret", salt=b"0123456789ab")
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", b"0123456789ab", 101)
    assert stored == {
        "password": base64.b64encode(expected).decode(),
        "salt": base64.b64encode(b"0123456789ab").decode(),
        "iterations": 101,
    }
    document = initial_dynsec("adm", "adm-pw", "svc", "svc-pw")
    assert document["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert "adm-pw" not in str(document) and "svc-pw" not in str(document)
    assert [c["username"] for c in document["clients"]] == ["adm", "svc"]


def test_the_configuration_refuses_anonymous_clients_on_every_listener() -> None:
    text = render(
        MosquittoConfig(
            dynsec_file="/d/dynamic-security.json",
            persistence_dir="/d",
            port=1883,
            tls_port=8883,
            certfile="/c.pem",
            keyfile="/k.pem",
        )
    )
    lines = text.splitlines()
    assert "per_listener_settings false" in lines and "allow_anonymous false" in lines
    assert "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so" in lines
    assert "persistence true" in lines and "persistence_location /d/" in lines
    assert "listener 1883 0.0.0.0" in lines and "listener 8883 0.0.0.0" in lines
    assert "certfile /c.pem" in lines and "keyfile /k.pem" in lines
    # per_listener_settings false: the security settings must come before any listener.
    assert lines.index("allow_anonymous false") < lines.index("listener 1883 0.0.0.0")


def test_certificate_only_devices_get_an_account_without_password_and_rights_by_state() -> None:
    clients, roles = fresh_broker()
    waiting = DeviceAccount("d1", CERTIFICATE_ONLY, True, quarantined=True)
    result = plan(clients, roles, [waiting], **SERVICE)
    created = [
        c for c in result.commands if c["command"] == "createClient" and c["username"] == "d1"
    ]
    assert len(created) == 1 and "password" not in created[0]
    clients, roles = broker_after(result.commands, clients, roles)
    assert clients["d1"].textname == "ampfleet:device:certificate"
    status_only = [{"acltype": "publishClientSend", "topic": "af/d1/status", "allow": True}]
    assert roles["af-device-d1"] == status_only  # publish its status, receive nothing

    approved = dataclasses.replace(waiting, quarantined=False)
    result = plan(clients, roles, [approved], **SERVICE)
    assert [c["command"] for c in result.commands] == ["modifyRole"]  # the client stays
    clients, roles = broker_after(result.commands, clients, roles)
    assert dynsec.acl_key(roles["af-device-d1"]) == dynsec.acl_key(dynsec.device_acls("d1"))
    assert not plan(clients, roles, [approved], **SERVICE).commands

    suspended = dataclasses.replace(approved, enabled=False)
    result = plan(clients, roles, [suspended], **SERVICE)
    clients, roles = broker_after(result.commands, clients, roles)
    # Mosquitto 2.0.11 ignores `disabled` for a certificate: the empty role is what holds it.
    assert roles["af-device-d1"] == [] and clients["d1"].disabled


def test_a_password_revoked_beside_a_certificate_recreates_the_account_without_it() -> None:
    clients, roles = fresh_broker()
    result = plan(clients, roles, [DeviceAccount("d1", "v1", True, "pw1")], **SERVICE)
    clients, roles = broker_after(result.commands, clients, roles)
    result = plan(clients, roles, [DeviceAccount("d1", CERTIFICATE_ONLY)], **SERVICE)
    # modifyClient cannot remove a password (an empty one is ignored): delete and create.
    commands = [c for c in result.commands if c.get("username") == "d1"]
    assert [c["command"] for c in commands] == ["deleteClient", "createClient"]
    assert "password" not in commands[1] and result.report.updated == ["d1"]


def test_the_mutual_tls_listener_binds_the_certificate_to_username_and_client_id() -> None:
    text = render(
        MosquittoConfig(
            "/d/dynsec.json",
            "/d",
            certfile="/c/server.pem",
            keyfile="/c/server.key",
            mtls_port=8884,
            client_ca_file="/pki/ca-chain.pem",
            crl_file="/pki/crl.pem",
            pid_file="/run/mosquitto.pid",
        )
    )
    listener = text[text.index("listener 8884") :].splitlines()
    for line in (
        "cafile /pki/ca-chain.pem",
        "crlfile /pki/crl.pem",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "tls_version tlsv1.2",
    ):
        assert line in listener
    assert "pid_file /run/mosquitto.pid" in text
    assert text.count("\nlistener ") == 2  # the password listener stays


def test_seeding_takes_certificate_only_devices_without_a_password() -> None:
    document = initial_dynsec("adm", "adm-pw", "svc", "svc-pw")
    seeded = seed_devices(document, [DeviceAccount("d1", CERTIFICATE_ONLY, quarantined=True)])
    client = next(c for c in seeded["clients"] if c["username"] == "d1")
    assert "password" not in client and client["clientid"] == "d1"
    role = next(r for r in seeded["roles"] if r["rolename"] == "af-device-d1")
    assert role["acls"] == dynsec.device_acls("d1", quarantined=True)


def test_production_has_no_plain_listener_and_a_broker_needs_one_listener() -> None:
    text = render(
        MosquittoConfig(
            "/d/dynsec.json",
            "/d",
            port=0,
            tls_port=8883,
            certfile="/c/server.pem",
            keyfile="/c/server.key",
            mtls_port=8884,
            client_ca_file="/pki/ca-chain.pem",
            crl_file="/pki/crl.pem",
        )
    )
    listeners = [line for line in text.splitlines() if line.startswith("listener ")]
    assert listeners == ["listener 8883 0.0.0.0", "listener 8884 0.0.0.0"]
    with pytest.raises(ValueError, match="no listener"):
        render(MosquittoConfig("/d/dynsec.json", "/d", port=0))
