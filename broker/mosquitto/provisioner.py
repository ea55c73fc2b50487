"""The Mosquitto provisioner: keeps dynamic-security accounts in step with the device registry.

It speaks the dynamic-security control API (Mosquitto docs, "Dynamic Security plugin"):
commands are JSON ``{"commands": [...]}`` published to ``$CONTROL/dynamic-security/v1``;
answers come on ``$CONTROL/dynamic-security/v1/response``, one per command, in order, each
echoing the command's ``correlationData``. Every provisioner connection (API workers, the
resync job) sees every answer, so each request tags its commands with its own id.

Each operation opens its own short connection as the admin account (the device link's
``ThreadedLink``, MQTT 3.1.1) and closes it: they are rare (issue, rotate, revoke, resync), and
a broker restart in between costs nothing. ``BrokerUnavailable`` says the broker could not be
reached or did not answer; ``BrokerCommandError`` that it refused a command.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from broker.admin import DeviceAccount, ResyncReport
from broker.errors import BrokerCommandError, BrokerUnavailable
from broker.mosquitto import dynsec
from broker.mosquitto.dynsec import Acl, ClientState, Command
from cloud.devicelink.accounts import admin_password, bridge_password, service_password
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.errors import CredentialsRefusedError, LinkError
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink
from cloud.settings import Settings, SettingsError

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds to connect, and to wait for each batch of answers
BATCH = 100  # commands per control message
# Errors that mean "already as wanted" for the command that got them.
_ABSENT = {"Client not found", "Role not found"}


class _Control:
    """One admin connection: send command batches, collect the answers by correlation id."""

    def __init__(self, provisioner: MosquittoProvisioner) -> None:
        self._p = provisioner
        endpoint = Endpoint(
            provisioner.host,
            provisioner.port,
            provisioner.tls,
            provisioner.admin_user,
            provisioner.admin_password,
            provisioner.ca_file,
        )
        self._link = ThreadedLink(
            endpoint,
            f"{provisioner.admin_user}-{secrets.token_hex(4)}",
            timeout=provisioner.timeout,
            attempts=1,
        )
        self._lock = threading.Condition()
        self._answers: dict[str, dict[str, Any]] = {}

    def _on_message(self, message: Message) -> None:
        # On the link's thread.
        try:
            answers = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable dynamic-security answer: %.200r", message.payload)
            return
        with self._lock:
            for answer in answers:
                key = answer.get("correlationData") if isinstance(answer, dict) else None
                if isinstance(key, str):
                    self._answers[key] = answer
            self._lock.notify_all()

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + self._p.timeout
        with self._lock:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerUnavailable(f"{self._p.where}: no {what} in {self._p.timeout}s")
                self._lock.wait(left)

    # the connection ------------------------------------------------------------------------

    def __enter__(self) -> _Control:
        self._link.start()
        try:
            try:
                self._link.wait_connected()
            except CredentialsRefusedError as exc:
                raise BrokerUnavailable(f"{self._p.where}: admin login refused ({exc})") from exc
            except LinkError as exc:
                raise BrokerUnavailable(f"{self._p.where}: {exc}") from exc
            try:
                granted = self._link.subscribe_wait(dynsec.RESPONSE_TOPIC, self._on_message)
            except LinkError as exc:
                raise BrokerUnavailable(f"{self._p.where}: no SUBACK ({exc})") from exc
            if not granted or granted[0] >= 0x80:
                raise BrokerUnavailable(f"{self._p.where}: the admin may not read the answers")
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        self._link.stop()

    def call(self, commands: list[Command]) -> list[dict[str, Any]]:
        """Send ``commands`` (in batches, in order); return their answers in the same order."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(commands), BATCH):
            request = secrets.token_hex(8)
            batch = [
                {**command, "correlationData": f"{request}:{index}"}
                for index, command in enumerate(commands[start : start + BATCH])
            ]
            keys = [c["correlationData"] for c in batch]
            try:
                self._link.publish(
                    dynsec.CONTROL_TOPIC, json.dumps({"commands": batch}).encode(), qos=1
                )
            except LinkError as exc:
                raise BrokerUnavailable(f"{self._p.where}: publish failed ({exc})") from exc
            self._wait(lambda keys=keys: all(k in self._answers for k in keys), "answer")
            with self._lock:
                answers += [self._answers.pop(k) for k in keys]
        return answers


class MosquittoProvisioner:
    """``BrokerAdmin`` for Mosquitto 2.0 with the dynamic-security plugin."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        admin_user: str,
        admin_password: str,
        service_user: str,
        service_password: str,
        tls: bool = False,
        ca_file: str = "",
        timeout: float = TIMEOUT,
        bridge_user: str | None = None,
        bridge_password: str | None = None,
    ) -> None:
        self.host, self.port, self.tls, self.ca_file = host, port, tls, ca_file
        self.admin_user, self.admin_password = admin_user, admin_password
        self.service_user, self.service_password = service_user, service_password
        # The OCPP bridge's account, kept like the service account when given.
        self.bridge_user, self.bridge_password = bridge_user, bridge_password
        self.timeout = timeout

    @property
    def where(self) -> str:
        """The broker's address, for messages."""
        return f"mosquitto at {self.host}:{self.port}"

    @classmethod
    def from_settings(cls, settings: Settings) -> MosquittoProvisioner:
        """The provisioner of the broker at ``broker_url``, with the configured accounts."""
        parts = urlsplit(settings.broker_url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise SettingsError(
                f"AMPFLEET_BROKER_URL: expected mqtt:// or mqtts://, not {settings.broker_url!r}"
            )
        tls = parts.scheme == "mqtts"
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            admin_user=settings.broker_admin_user,
            admin_password=admin_password(settings),
            service_user=settings.broker_service_user,
            service_password=service_password(settings),
            tls=tls,
            ca_file=settings.broker_tls_ca_file,
            bridge_user=settings.broker_bridge_user,
            bridge_password=bridge_password(settings),
        )

    @contextmanager
    def _control(self) -> Iterator[_Control]:
        with _Control(self) as control:
            yield control

    def execute(self, commands: list[Command]) -> list[dict[str, Any]]:
        """Send raw dynamic-security commands; return the answers (errors included)."""
        with self._control() as control:
            return control.call(commands)

    def _apply(self, control: _Control, commands: list[Command]) -> None:
        """Send ``commands``; raise on the first error that is not "already so"."""
        if not commands:
            return
        for command, answer in zip(commands, control.call(commands), strict=True):
            error = answer.get("error")
            if error and error not in _ABSENT:
                raise BrokerCommandError(command["command"], str(error))

    # reading the broker's accounts ---------------------------------------------------------

    def state(self) -> tuple[dict[str, ClientState], dict[str, list[Acl]]]:
        """Every client (by username) and role (name -> ACLs) the broker has."""
        with self._control() as control:
            return self._state(control)

    def _state(self, control: _Control) -> tuple[dict[str, ClientState], dict[str, list[Acl]]]:
        clients = {
            c.username: c
            for c in map(ClientState.from_json, self._listing(control, "listClients", "clients"))
        }
        roles = {
            str(r["rolename"]): list(r.get("acls", []))
            for r in self._listing(control, "listRoles", "roles")
        }
        return clients, roles

    def _listing(self, control: _Control, command: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            # count -1: everything; offset guards against a broker that pages anyway.
            answer = control.call(
                [{"command": command, "verbose": True, "count": -1, "offset": len(items)}]
            )[0]
            if "error" in answer:
                raise BrokerCommandError(command, str(answer["error"]))
            data = answer.get("data", {})
            page = list(data.get(key, []))
            items += page
            if not page or len(items) >= int(data.get("totalCount", len(items))):
                return items

    def _partial_state(
        self, control: _Control, usernames: list[str], rolenames: list[str]
    ) -> tuple[dict[str, ClientState], dict[str, list[Acl]]]:
        """The named clients and roles only (those that exist)."""
        queries = [{"command": "getClient", "username": u} for u in usernames]
        queries += [{"command": "getRole", "rolename": r} for r in rolenames]
        answers = control.call(queries)
        clients: dict[str, ClientState] = {}
        roles: dict[str, list[Acl]] = {}
        for query, answer in zip(queries, answers, strict=True):
            error = answer.get("error")
            if error in _ABSENT:
                continue
            if error:
                raise BrokerCommandError(query["command"], str(error))
            data = answer.get("data", {})
            if "client" in data:
                client = ClientState.from_json(data["client"])
                clients[client.username] = client
            elif "role" in data:
                roles[str(data["role"]["rolename"])] = list(data["role"].get("acls", []))
        return clients, roles

    # BrokerAdmin -----------------------------------------------------------------------

    def upsert_device(
        self, device_id: str, password: str, *, version: str, enabled: bool = True
    ) -> None:
        """Create or update the device's account and role; a new password disconnects the
        session that used the old one (Mosquitto does so on every password change)."""
        account = DeviceAccount(device_id, version, enabled, password)
        with self._control() as control:
            usernames = [device_id, self.service_user]
            rolenames = [dynsec.device_role(device_id), dynsec.SERVICE_ROLE]
            if self.bridge_user and self.bridge_password:
                usernames.append(self.bridge_user)
                rolenames.append(dynsec.BRIDGE_ROLE)
            clients, roles = self._partial_state(control, usernames, rolenames)
            planned = self._plan(clients, roles, [account], complete=False)
            self._apply(control, planned.commands)
        log.info("mosquitto: account of %s set (credential %s)", device_id, version)

    def remove_device(self, device_id: str) -> None:
        """Delete the device's account (Mosquitto disconnects it) and its role."""
        with self._control() as control:
            self._apply(
                control,
                [
                    {"command": "deleteClient", "username": device_id},
                    {"command": "deleteRole", "rolename": dynsec.device_role(device_id)},
                ],
            )
        log.info("mosquitto: account of %s removed", device_id)

    def disconnect(self, device_id: str) -> None:
        """Close the device's connection: there is no kick command in Mosquitto 2.0, but
        disabling a client disconnects it, and enabling it again lets it reconnect."""
        with self._control() as control:
            clients, _ = self._partial_state(control, [device_id], [])
            client = clients.get(device_id)
            if client is not None and not client.disabled:
                self._apply(
                    control,
                    [
                        {"command": "disableClient", "username": device_id},
                        {"command": "enableClient", "username": device_id},
                    ],
                )

    def refresh_device(
        self, device_id: str, account: DeviceAccount | None, *, kick: bool = False
    ) -> None:
        """Make the device's account and role what the registry says now (``account``; None:
        delete both, which disconnects it); ``kick`` disconnects it in any case.

        A role's new ACL applies to the device's next PUBLISH and delivery at once; a kick
        makes it reconnect and subscribe again under the new rights (an approval). For a
        device on the mutual-TLS listener, deleting its client is what cuts it off: Mosquitto
        2.0.11 lets a certificate reconnect whatever dynamic security says, and without a
        client it may do nothing (deny by default) until the broker re-reads its CRL.
        """
        if account is None:
            self.remove_device(device_id)
            return
        with self._control() as control:
            usernames = [device_id, self.service_user]
            rolenames = [dynsec.device_role(device_id), dynsec.SERVICE_ROLE]
            if self.bridge_user and self.bridge_password:
                usernames.append(self.bridge_user)
                rolenames.append(dynsec.BRIDGE_ROLE)
            clients, roles = self._partial_state(control, usernames, rolenames)
            planned = self._plan(clients, roles, [account], complete=False)
            commands = list(planned.commands)
            client = clients.get(device_id)
            recreated = any(c["command"] == "deleteClient" for c in commands)
            kicked = any(c["command"] == "disableClient" for c in commands)
            if kick and client is not None and not (recreated or kicked):
                # No kick command in Mosquitto 2.0: disabling a client disconnects it. The
                # plan has already set ``disabled`` as the account wants it; so does the kick.
                if not account.enabled:
                    commands += [
                        {"command": "enableClient", "username": device_id},
                        {"command": "disableClient", "username": device_id},
                    ]
                else:
                    commands += [
                        {"command": "disableClient", "username": device_id},
                        {"command": "enableClient", "username": device_id},
                    ]
            self._apply(control, commands)
        log.info(
            "mosquitto: account of %s refreshed (%s%s%s)",
            device_id,
            "quarantined" if account.quarantined else "in service",
            "" if account.enabled else ", disabled",
            ", disconnected" if kick else "",
        )

    def resync(
        self, devices: Iterable[DeviceAccount], *, registered: Collection[str] = ()
    ) -> ResyncReport:
        """Make the broker's accounts exactly the registry's; a second run changes nothing."""
        with self._control() as control:
            clients, roles = self._state(control)
            planned = self._plan(clients, roles, devices, complete=True, registered=registered)
            self._apply(control, planned.commands)
        report = planned.report
        if report.needs_rotation:
            log.error(
                "mosquitto lacks the current password of %d device(s) (only hashes are "
                "stored): rotate their credentials: %s",
                len(report.needs_rotation),
                ", ".join(report.needs_rotation[:20]),
            )
        if report.foreign:
            log.warning("mosquitto accounts not made by ampfleet: %s", ", ".join(report.foreign))
        return report

    def _plan(
        self,
        clients: dict[str, ClientState],
        roles: dict[str, list[Acl]],
        devices: Iterable[DeviceAccount],
        *,
        complete: bool,
        registered: Collection[str] = (),
    ) -> dynsec.Plan:
        return dynsec.plan(
            clients,
            roles,
            devices,
            service_user=self.service_user,
            service_password=self.service_password,
            admin_user=self.admin_user,
            complete=complete,
            registered=registered,
            bridge_user=self.bridge_user,
            bridge_password=self.bridge_password,
        )
