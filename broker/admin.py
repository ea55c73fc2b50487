"""Keeping a broker's accounts in step with the device registry: the ``BrokerAdmin`` interface.

The registry (``device_credentials``) is the truth. What a broker needs from it differs:

* the embedded broker (amqtt) authenticates every CONNECT against the registry itself and
  re-checks connected devices every ``RECHECK_INTERVAL`` seconds (broker.embedded), so there is
  nothing to push: ``EmbeddedBrokerAdmin`` only logs;
* Mosquitto keeps its own accounts (dynamic security): ``MosquittoProvisioner`` creates,
  changes and deletes them over the broker's control topic.

Both are chosen by ``settings.broker`` (``broker_admin``) and pass the same contract. Pushing a
change can fail (broker down): callers log it and rely on ``resync``, which is idempotent and
repairs whatever drifted.

The plain password exists only while the API answers an issue or a rotation: ``DeviceAccount``
carries it when it is known and None otherwise (a resync from the registry, which stores only
hashes). ``version`` fingerprints the credential generation, so a broker holding an older
password can be told apart from one holding the current one without knowing either; a device
that holds a certificate of the platform PKI but no password has the version
``CERTIFICATE_ONLY`` (it authenticates on the mutual-TLS listener, docs/mutual-tls.md).

What a device may do follows from its account: everything of the device contract; only
publish its status while ``quarantined`` (not approved, or a swapped board); nothing while
not ``enabled`` (suspended, decommissioned). ``refresh_device`` is what the cloud calls when
one of those changes for one device (a certificate revoked, a quarantine put or released, an
approval), so that the broker follows at once rather than at the next resync.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable
from typing import Protocol

from cloud.settings import Settings

log = logging.getLogger(__name__)

# The version of a device that holds a certificate in force but no password credential (or
# whose passwords the settings turn off, ``broker_device_passwords``).
CERTIFICATE_ONLY = "certificate"


@dataclasses.dataclass(frozen=True)
class DeviceAccount:
    """What a broker should know of one device that holds an active credential."""

    device_id: str
    # cloud.devices.credentials.credential_version of the stored hash, or CERTIFICATE_ONLY.
    version: str
    enabled: bool = True  # False while the device is suspended or decommissioned
    password: str | None = dataclasses.field(default=None, repr=False)  # None: not known
    # Not approved, or quarantined (cloud.devices.quarantine): may publish its status only.
    quarantined: bool = False

    @property
    def password_auth(self) -> bool:
        """Whether the device may log in with a password (else by certificate only)."""
        return self.version != CERTIFICATE_ONLY


@dataclasses.dataclass
class ResyncReport:
    """What a resync changed, by device id; ``needs_rotation`` lists what it could not fix."""

    created: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    enabled: list[str] = dataclasses.field(default_factory=list)
    disabled: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    # Accounts whose current password the broker lacks and we cannot give it (only the hash is
    # stored): their old secret is disabled; a rotation through the API fixes them.
    needs_rotation: list[str] = dataclasses.field(default_factory=list)
    # Shared accounts and roles (service account, per-device roles) created or repaired.
    repaired: list[str] = dataclasses.field(default_factory=list)
    # Accounts on the broker that ampfleet did not make (an operator's): reported, untouched.
    foreign: list[str] = dataclasses.field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the resync changed anything on the broker."""
        return bool(
            self.created
            or self.updated
            or self.enabled
            or self.disabled
            or self.removed
            or self.repaired
        )

    def summary(self) -> str:
        """One line per non-empty list, for logs and the CLI."""
        lines = []
        for field in dataclasses.fields(self):
            ids: list[str] = getattr(self, field.name)
            if ids:
                shown = ", ".join(ids[:20]) + (f" (+{len(ids) - 20} more)" if len(ids) > 20 else "")
                lines.append(f"{field.name.replace('_', ' ')}: {shown}")
        return "\n".join(lines) or "nothing to change"


class BrokerAdmin(Protocol):
    """Applies registry changes to a broker. Every method is idempotent."""

    def upsert_device(
        self, device_id: str, password: str, *, version: str, enabled: bool = True
    ) -> None:
        """Let ``device_id`` connect with ``password`` (and no older one); disconnects a
        session that used an older password."""

    def remove_device(self, device_id: str) -> None:
        """Refuse ``device_id`` from now on and disconnect it if connected."""

    def disconnect(self, device_id: str) -> None:
        """Close ``device_id``'s connection, if any; it may reconnect if still allowed."""

    def refresh_device(
        self, device_id: str, account: DeviceAccount | None, *, kick: bool = False
    ) -> None:
        """Make the broker's account of ``device_id`` what the registry says now: ``account``
        (``broker.registry.account_of``; None: the device holds no credential in force and is
        removed). ``kick`` also closes its connection, so that it reconnects under its new
        rights (a certificate revoked, an approval: a device re-subscribes on reconnect)."""

    def resync(
        self, devices: Iterable[DeviceAccount], *, registered: Collection[str] = ()
    ) -> ResyncReport:
        """Make the broker's accounts exactly ``devices`` (plus the cloud's own accounts).

        ``registered`` names every device of the registry, with or without a credential: an
        account of one of them that is not in ``devices`` is removed even if someone else
        made it.
        """


class EmbeddedBrokerAdmin:
    """The embedded broker: nothing to push, it reads the registry.

    The amqtt plugin authenticates each CONNECT against the records database, and its
    watchdog disconnects, within ``RECHECK_INTERVAL`` seconds, every connected device whose
    credential was revoked or rotated or whose device was suspended, decommissioned or deleted.
    """

    def upsert_device(
        self, device_id: str, password: str, *, version: str, enabled: bool = True
    ) -> None:
        """Nothing to do: the next CONNECT is checked against the registry."""
        log.debug("embedded broker: %s credential %s is read from the registry", device_id, version)

    def remove_device(self, device_id: str) -> None:
        """Nothing to push: the broker's watchdog disconnects the device within seconds."""
        log.debug("embedded broker: %s is disconnected by the broker's watchdog", device_id)

    def disconnect(self, device_id: str) -> None:
        """Nothing to push (see ``remove_device``)."""
        log.debug("embedded broker: %s is disconnected by the broker's watchdog", device_id)

    def refresh_device(
        self, device_id: str, account: DeviceAccount | None, *, kick: bool = False
    ) -> None:
        """Nothing to push: the broker reads the registry at every CONNECT and its watchdog
        re-checks connected devices every ``RECHECK_INTERVAL`` seconds."""
        log.debug("embedded broker: %s is re-checked by the broker's watchdog", device_id)

    def resync(
        self, devices: Iterable[DeviceAccount], *, registered: Collection[str] = ()
    ) -> ResyncReport:
        """Nothing to resync: the embedded broker has no accounts of its own."""
        return ResyncReport()


def broker_admin(settings: Settings) -> BrokerAdmin:
    """The admin of the configured broker: embedded (amqtt) or external (Mosquitto)."""
    if settings.broker == "embedded":
        return EmbeddedBrokerAdmin()
    from broker.mosquitto.provisioner import MosquittoProvisioner

    return MosquittoProvisioner.from_settings(settings)
