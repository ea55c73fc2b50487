"""Mosquitto dynamic security, I/O-free: the roles of the device contract and the reconcile plan.

What Mosquitto 2.0.11 does, measured against /usr/sbin/mosquitto (tests/broker show it):

* ACL topics are taken literally: ``%c``/``%u`` patterns exist only in ``acl_file``, not in
  dynamic-security roles, so every device gets its own role (``af-device-<id>``) naming its
  own topics. A client's ``clientid`` binds it: a CONNECT with another client id is refused.
* A shared subscription is checked as the full ``$share/<group>/<filter>`` string, so the
  service role needs ``$share/+/af/#`` besides ``af/#``.
* ``setClientPassword``, ``modifyClient``, ``disableClient`` and ``deleteClient`` disconnect a
  connected client; ``createClient`` takes only a plain password (no stored hash), and
  ``addClientRole`` of a role the client already has answers "Internal error". ``plan`` only
  sends what differs, so a resync that finds nothing wrong disconnects nobody.
* Default access: ``publishClientSend``, ``publishClientReceive`` and ``subscribe`` are denied
  unless a role allows them. ``unsubscribe`` stays allowed: it can only narrow what a client
  receives.

``plan`` compares the broker's accounts with the registry's (``DeviceAccount``) and returns
the commands that reconcile them and the report of what they do. Accounts that are ours carry
a text name ``ampfleet:...``; an account named after a registered device is the registry's
too; other accounts (an operator's) are reported, never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from broker.acl import BRIDGE_FOLLOWS, CLOUD_TO_DEVICE, DEVICE_TO_CLOUD, TOPIC_ROOT, device_topic
from broker.admin import DeviceAccount, ResyncReport
from firmware.core import topics

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"

ADMIN_ROLE = "ampfleet-admin"
SERVICE_ROLE = "ampfleet-service"
BRIDGE_ROLE = "ampfleet-ocpp-bridge"
DEVICE_ROLE_PREFIX = "af-device-"
TEXT_PREFIX = "ampfleet:"
ADMIN_TEXT = TEXT_PREFIX + "admin"
DEVICE_TEXT = TEXT_PREFIX + "device:"
SERVICE_TEXT = TEXT_PREFIX + "service:"
BRIDGE_TEXT = TEXT_PREFIX + "bridge:"

DEFAULT_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}

Command = dict[str, Any]
Acl = dict[str, Any]


def _acl(acltype: str, topic: str) -> Acl:
    return {"acltype": acltype, "topic": topic, "allow": True}


def admin_acls() -> list[Acl]:
    """The provisioner's role: the dynamic-security control topics, nothing else."""
    return [
        _acl("publishClientSend", CONTROL_TOPIC),
        _acl("subscribeLiteral", RESPONSE_TOPIC),
        _acl("publishClientReceive", RESPONSE_TOPIC),
    ]


def service_acls() -> list[Acl]:
    """The service role: subscribe to everything under af/ (also shared), publish the
    cloud-to-device channels of any device."""
    everything = f"{TOPIC_ROOT}/#"
    acls = [
        _acl("subscribePattern", everything),
        _acl("subscribePattern", f"$share/+/{everything}"),
        _acl("publishClientReceive", everything),
    ]
    acls += [_acl("publishClientSend", device_topic("+", c)) for c in CLOUD_TO_DEVICE]
    return acls


def bridge_acls() -> list[Acl]:
    """The OCPP bridge's role: publish the device-to-cloud channels of any device (for the
    chargers it holds), subscribe to one device's downlink and status at a time.

    ``subscribeLiteral`` with a ``+`` never matches a concrete filter in Mosquitto, so the
    subscriptions are patterns; ``broker.acl`` (the embedded broker) also refuses wildcard
    filters, Mosquitto lets a bridge subscribe to ``af/+/cmd`` (it could read every command,
    which the service account can anyway)."""
    acls = [_acl("publishClientSend", device_topic("+", c)) for c in DEVICE_TO_CLOUD]
    for channel in BRIDGE_FOLLOWS:
        acls.append(_acl("subscribePattern", device_topic("+", channel)))
        acls.append(_acl("publishClientReceive", device_topic("+", channel)))
    return acls


def device_role(device_id: str) -> str:
    """The role that holds one device's ACL."""
    return DEVICE_ROLE_PREFIX + device_id


def device_acls(device_id: str, *, quarantined: bool = False, enabled: bool = True) -> list[Acl]:
    """One device's ACL: publish its device-to-cloud channels (and its will, which is one of
    them), subscribe literally to and receive its cloud-to-device channels.

    Quarantined: publish its status (and its will there), nothing else, receive nothing.
    Not enabled (suspended, decommissioned): nothing at all. The ACL is what holds a device
    that authenticated by certificate: Mosquitto 2.0.11 ignores a client's ``disabled`` flag
    then (docs/mutual-tls.md); a change of ACL applies to the next PUBLISH and delivery.
    """
    if not enabled:
        return []
    if quarantined:
        return [_acl("publishClientSend", device_topic(device_id, topics.STATUS))]
    acls = [_acl("publishClientSend", device_topic(device_id, c)) for c in DEVICE_TO_CLOUD]
    for channel in CLOUD_TO_DEVICE:
        acls.append(_acl("subscribeLiteral", device_topic(device_id, channel)))
        acls.append(_acl("publishClientReceive", device_topic(device_id, channel)))
    return acls


def account_acls(account: DeviceAccount) -> list[Acl]:
    """The ACL of ``account``'s role, as its state (quarantined, enabled) allows."""
    return device_acls(account.device_id, quarantined=account.quarantined, enabled=account.enabled)


def service_text(username: str, password: str, prefix: str = SERVICE_TEXT) -> str:
    """The service account's text name: a fingerprint of its password, so a resync can tell
    whether the broker holds the current one without resetting it (which would disconnect
    every worker). PBKDF2 with 100k rounds keeps a weak configured password expensive to
    guess from it; only the dynamic-security admin can read text names anyway."""
    salt = f"ampfleet-broker:{username}".encode()
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return prefix + digest[:8].hex()


@dataclasses.dataclass(frozen=True)
class ClientState:
    """A dynamic-security client as ``listClients``/``getClient`` (verbose) report it."""

    username: str
    clientid: str | None = None
    textname: str | None = None
    disabled: bool = False
    roles: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientState:
        """Parse one client of a dynamic-security response."""
        return cls(
            username=str(data["username"]),
            clientid=data.get("clientid") or None,
            textname=data.get("textname") or None,
            disabled=bool(data.get("disabled", False)),
            roles=tuple(str(r["rolename"]) for r in data.get("roles", [])),
        )

    @property
    def managed(self) -> bool:
        """Whether ampfleet made this account (its text name says so)."""
        return (self.textname or "").startswith(TEXT_PREFIX)


def acl_key(acls: Iterable[Mapping[str, Any]]) -> frozenset[tuple[str, str, bool, int]]:
    """ACLs in a comparable form (Mosquitto adds ``priority: 0`` and reorders them)."""
    return frozenset(
        (str(a["acltype"]), str(a["topic"]), bool(a.get("allow", False)), int(a.get("priority", 0)))
        for a in acls
    )


@dataclasses.dataclass
class Plan:
    """The commands that reconcile the broker with the registry, and what they amount to."""

    commands: list[Command] = dataclasses.field(default_factory=list)
    report: ResyncReport = dataclasses.field(default_factory=ResyncReport)


def plan(
    clients: Mapping[str, ClientState],
    roles: Mapping[str, list[Acl]],
    devices: Iterable[DeviceAccount],
    *,
    service_user: str,
    service_password: str,
    admin_user: str,
    complete: bool = True,
    registered: Collection[str] = (),
    bridge_user: str | None = None,
    bridge_password: str | None = None,
) -> Plan:
    """What to send so that the broker holds exactly ``devices`` and the service account.

    ``clients``/``roles`` are the broker's current accounts (by username / role name) and
    ``devices`` the registry's active credentials. With ``complete`` False (a single device
    upserted by the API) nothing is removed. Accounts named after a ``registered`` device
    are the registry's to decide, whoever made them. With ``bridge_user`` and
    ``bridge_password``, the OCPP bridge's account is kept as the service account is;
    without, a bridge account found on the broker is left alone (another installation's
    provisioner, configured with it, keeps it).
    """
    result = Plan()
    _plan_service(result, clients, roles, service_user, service_password)
    if bridge_user and bridge_password:
        _plan_service(
            result,
            clients,
            roles,
            bridge_user,
            bridge_password,
            BRIDGE_ROLE,
            bridge_acls(),
            BRIDGE_TEXT,
        )
    wanted: set[str] = set()
    for account in devices:
        wanted.add(account.device_id)
        _plan_device(result, clients.get(account.device_id), roles, account)
    if complete:
        ours = {admin_user, service_user, bridge_user}
        registry = set(registered)
        for username, client in sorted(clients.items()):
            if username in ours or username in wanted:
                continue
            if not bridge_user and (client.textname or "").startswith(BRIDGE_TEXT):
                continue
            if client.managed or username in registry or device_role(username) in client.roles:
                result.commands.append({"command": "deleteClient", "username": username})
                result.report.removed.append(username)
            else:
                result.report.foreign.append(username)
        for rolename in sorted(roles):
            device_id = rolename.removeprefix(DEVICE_ROLE_PREFIX)
            if rolename.startswith(DEVICE_ROLE_PREFIX) and device_id not in wanted:
                result.commands.append({"command": "deleteRole", "rolename": rolename})
                result.report.repaired.append(f"deleted role {rolename}")
    return result


def _ensure_role(result: Plan, roles: Mapping[str, list[Acl]], name: str, acls: list[Acl]) -> None:
    current = roles.get(name)
    if current is None:
        result.commands.append({"command": "createRole", "rolename": name, "acls": acls})
        result.report.repaired.append(f"created role {name}")
    elif acl_key(current) != acl_key(acls):
        # modifyRole replaces the role's ACL list as a whole.
        result.commands.append({"command": "modifyRole", "rolename": name, "acls": acls})
        result.report.repaired.append(f"restored the ACL of role {name}")


def _plan_service(
    result: Plan,
    clients: Mapping[str, ClientState],
    roles: Mapping[str, list[Acl]],
    username: str,
    password: str,
    role: str = SERVICE_ROLE,
    acls: list[Acl] | None = None,
    text_prefix: str = SERVICE_TEXT,
) -> None:
    _ensure_role(result, roles, role, service_acls() if acls is None else acls)
    what = "service account" if role == SERVICE_ROLE else "account"
    text = service_text(username, password, text_prefix)
    client = clients.get(username)
    if client is None:
        result.commands.append(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "textname": text,
                "roles": [{"rolename": role}],
            }
        )
        result.report.repaired.append(f"created the {what} {username}")
        return
    change: Command = {}
    if client.textname != text:
        change.update(password=password, textname=text)
    if client.roles != (role,):
        change["roles"] = [{"rolename": role}]
    if change:
        result.commands.append({"command": "modifyClient", "username": username, **change})
        result.report.repaired.append(f"restored the {what} {username}")
    if client.clientid:
        # Every worker connects with its own client id: the account must not be bound to one.
        result.commands.append({"command": "setClientId", "username": username})
        result.report.repaired.append(f"unbound the {what} {username}")
    if client.disabled:
        result.commands.append({"command": "enableClient", "username": username})
        result.report.repaired.append(f"enabled the {what} {username}")


def _plan_device(
    result: Plan,
    client: ClientState | None,
    roles: Mapping[str, list[Acl]],
    account: DeviceAccount,
) -> None:
    device_id = account.device_id
    role = device_role(device_id)
    text = DEVICE_TEXT + account.version
    commands, report = result.commands, result.report
    if client is None and account.password is None and account.password_auth:
        # Only the hash is stored: the broker cannot be given this password again.
        report.needs_rotation.append(device_id)
        return
    _ensure_role(result, roles, role, account_acls(account))
    if client is None:
        _create_device_client(commands, account, text, role)
        report.created.append(device_id)
        return
    disabled = client.disabled
    if client.textname != text and not account.password_auth:
        # Certificate only (no password credential, or passwords off): the old password must
        # go, and modifyClient cannot remove one (an empty password is ignored). Recreating
        # the client disconnects the device once.
        commands.append({"command": "deleteClient", "username": device_id})
        _create_device_client(commands, account, text, role)
        report.updated.append(device_id)
        return
    if client.textname != text:
        if account.password is None:
            # The broker holds an older password: it must stop working, now.
            report.needs_rotation.append(device_id)
            if not disabled:
                commands.append({"command": "disableClient", "username": device_id})
                report.disabled.append(device_id)
            return
        commands.append(
            {
                "command": "modifyClient",
                "username": device_id,
                "password": account.password,
                "clientid": device_id,
                "textname": text,
                "roles": [{"rolename": role}],
            }
        )
        report.updated.append(device_id)
    elif client.clientid != device_id or client.roles != (role,):
        commands.append(
            {
                "command": "modifyClient",
                "username": device_id,
                "clientid": device_id,
                "roles": [{"rolename": role}],
            }
        )
        report.updated.append(device_id)
    if account.enabled and disabled:
        commands.append({"command": "enableClient", "username": device_id})
        report.enabled.append(device_id)
    elif not account.enabled and not disabled:
        commands.append({"command": "disableClient", "username": device_id})
        report.disabled.append(device_id)


def _create_device_client(
    commands: list[Command], account: DeviceAccount, text: str, role: str
) -> None:
    """createClient for a device: with its password, or none (certificate only: a client
    without a password is refused on the password listeners)."""
    command: Command = {
        "command": "createClient",
        "username": account.device_id,
        "clientid": account.device_id,
        "textname": text,
        "roles": [{"rolename": role}],
    }
    if account.password is not None and account.password_auth:
        command["password"] = account.password
    commands.append(command)
    if not account.enabled:
        commands.append({"command": "disableClient", "username": account.device_id})
