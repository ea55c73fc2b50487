"""amqtt 0.12.1 plugins of the embedded broker: device authentication and the topic ACL.

amqtt asks every authentication plugin at CONNECT (all must say True) and every topic plugin
for each SUBSCRIBE filter, each PUBLISH and each delivery (``Action.RECEIVE``). The
authentication plugin is configured with the broker's ``DeviceRegistry`` (passwords) and,
when the mutual-TLS listener is on, its ``CertificateRegistry`` (``{"registry": registry,
"certificates": certificates}``; see broker.embedded); both plugins must be the broker's
only plugins: amqtt's default set includes ``AnonymousAuthPlugin`` with
``allow_anonymous: True``.

A connection of the mutual-TLS listener carries its verified client certificate in
``session.attributes[PEER_CERTIFICATE]`` (put there by broker.embedded.DeviceBroker): such a
CONNECT is decided by the certificate alone, its username and password are not looked at.

The authenticated identity, and whether the device is in quarantine, are kept in
``session.attributes`` so the topic plugin, and the watchdog that disconnects revoked devices
and refreshes the quarantine flag, know who a session is without asking again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.contexts import BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker import certauth
from broker.acl import Action, allowed
from broker.registry import Decision, DeviceRegistry, Identity

log = logging.getLogger(__name__)

IDENTITY = "ampfleet.identity"  # key of the Identity in amqtt's Session.attributes
QUARANTINED = "ampfleet.quarantined"  # key of the device's quarantine flag (bool)
PEER_CERTIFICATE = "ampfleet.peer_certificate"  # key of the verified client certificate (DER)


def session_identity(session: Session | None) -> Identity | None:
    """The identity a session authenticated as, or None."""
    if session is None:
        return None
    identity = session.attributes.get(IDENTITY)
    return identity if isinstance(identity, Identity) else None


def session_quarantined(session: Session | None) -> bool:
    """Whether the session's device is in quarantine (as last checked)."""
    return session is not None and session.attributes.get(QUARANTINED) is True


class DeviceAuthPlugin(BaseAuthPlugin):
    """Authenticates CONNECTs against the device registry (see broker.registry)."""

    @dataclasses.dataclass
    class Config:
        """The registries to check against (objects: the plugin is configured in code)."""

        registry: Any = None
        certificates: Any = None  # a CertificateRegistry when the mutual-TLS listener is on
        # False (AMPFLEET_BROKER_DEVICE_PASSWORDS off): devices come in by certificate only.
        device_passwords: bool = True

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        registry = self.config.registry
        if not isinstance(registry, DeviceRegistry):
            raise TypeError("DeviceAuthPlugin needs {'registry': DeviceRegistry}")
        self.registry: DeviceRegistry = registry
        certificates = self.config.certificates
        if certificates is not None and not isinstance(certificates, certauth.CertificateRegistry):
            raise TypeError("DeviceAuthPlugin's 'certificates' must be a CertificateRegistry")
        self.certificates: certauth.CertificateRegistry | None = certificates

    def _decide(self, session: Session, certificate: bytes | None) -> tuple[Decision, bool]:
        """The CONNECT's decision, and whether the device is in quarantine (blocking)."""
        if certificate is not None:
            if self.certificates is None:
                decision = Decision(None, "client certificates are not accepted here")
            else:
                decision = self.certificates.authenticate(certificate, session.client_id)
        else:
            decision = self.registry.authenticate(
                session.username, session.password, session.client_id
            )
            found = decision.identity
            if found and not (found.is_service or found.is_bridge or self.config.device_passwords):
                # A password issued before they were turned off does not open the door either.
                decision = Decision(None, "device passwords are off: connect with a certificate")
        identity = decision.identity
        if identity is None or identity.is_service or identity.is_bridge:
            return decision, False
        quarantined = certauth.quarantined(self.registry.database, [identity.username])
        return decision, identity.username in quarantined

    async def authenticate(self, *, session: Session) -> bool:
        """True when the registry accepts the CONNECT (and its will topic); False otherwise."""
        session.attributes.pop(IDENTITY, None)
        session.attributes.pop(QUARANTINED, None)
        certificate = session.attributes.get(PEER_CERTIFICATE)
        try:
            # argon2 and the database block: keep them off the broker's event loop.
            decision, quarantined = await asyncio.to_thread(self._decide, session, certificate)
        except Exception:
            # A database outage refuses clients; it must not take the broker down.
            log.exception("authentication of %r failed", session.username)
            return False
        identity, reason = decision.identity, decision.reason
        if identity is not None and session.will_flag:
            # amqtt publishes a will without asking the topic plugins: check it now, as
            # Mosquitto does (a will is a PUBLISH on the client's behalf, MQTT-3.1.2-8).
            will_topic = session.will_topic or ""
            if not allowed(
                identity.username,
                Action.PUBLISH,
                will_topic,
                identity.is_service,
                identity.is_bridge,
                quarantined,
            ):
                identity, reason = None, f"will topic {will_topic!r} is not allowed"
        if identity is None and certificate is not None:
            log.info(
                "refused CONNECT from %s with a client certificate (client id %r): %s",
                session.remote_address,
                session.client_id,
                reason,
            )
            return False
        if identity is None:
            log.info(
                "refused CONNECT from %s (username %r, client id %r): %s",
                session.remote_address,
                session.username,
                session.client_id,
                reason,
            )
            return False
        session.attributes[IDENTITY] = identity
        session.attributes[QUARANTINED] = quarantined
        return True


class DeviceTopicPlugin(BaseTopicPlugin):
    """Applies broker.acl.allowed to every SUBSCRIBE, PUBLISH and delivery."""

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: AmqttAction | None = None,
    ) -> bool:
        """True only when the session's identity may do ``action`` on ``topic``."""
        identity = session_identity(session)
        if identity is None or topic is None or action is None:
            return False
        decision = allowed(
            identity.username,
            Action(action.value),
            topic,
            identity.is_service,
            identity.is_bridge,
            session_quarantined(session),
        )
        if not decision and action is not AmqttAction.RECEIVE:
            log.info("denied %s %r to %r", action.value, topic, identity.username)
        return decision
