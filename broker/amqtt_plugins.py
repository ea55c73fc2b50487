"""amqtt 0.12.1 plugins of the embedded broker: device authentication and the topic ACL.

amqtt asks every authentication plugin at CONNECT (all must say True) and every topic plugin
for each SUBSCRIBE filter, each PUBLISH and each delivery (``Action.RECEIVE``). Both plugins
are configured with the broker's ``DeviceRegistry`` (``{"registry": registry}``; see
broker.embedded), and must be the broker's only plugins: amqtt's default set includes
``AnonymousAuthPlugin`` with ``allow_anonymous: True``.

The authenticated identity is kept in ``session.attributes`` so the topic plugin, and the
watchdog that disconnects revoked devices, know who a session is without asking again.
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

from broker.acl import Action, allowed
from broker.registry import DeviceRegistry, Identity

log = logging.getLogger(__name__)

IDENTITY = "ampfleet.identity"  # key of the Identity in amqtt's Session.attributes


def session_identity(session: Session | None) -> Identity | None:
    """The identity a session authenticated as, or None."""
    if session is None:
        return None
    identity = session.attributes.get(IDENTITY)
    return identity if isinstance(identity, Identity) else None


class DeviceAuthPlugin(BaseAuthPlugin):
    """Authenticates CONNECTs against the device registry (see broker.registry)."""

    @dataclasses.dataclass
    class Config:
        """The registry to check against (an object: the plugin is configured in code)."""

        registry: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        registry = self.config.registry
        if not isinstance(registry, DeviceRegistry):
            raise TypeError("DeviceAuthPlugin needs {'registry': DeviceRegistry}")
        self.registry: DeviceRegistry = registry

    async def authenticate(self, *, session: Session) -> bool:
        """True when the registry accepts the CONNECT (and its will topic); False otherwise."""
        session.attributes.pop(IDENTITY, None)
        try:
            # argon2 and the database block: keep them off the broker's event loop.
            decision = await asyncio.to_thread(
                self.registry.authenticate, session.username, session.password, session.client_id
            )
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
            ):
                identity, reason = None, f"will topic {will_topic!r} is not allowed"
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
            identity.username, Action(action.value), topic, identity.is_service, identity.is_bridge
        )
        if not decision and action is not AmqttAction.RECEIVE:
            log.info("denied %s %r to %r", action.value, topic, identity.username)
        return decision
