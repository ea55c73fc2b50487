"""Who may publish and subscribe where: the device contract's topic ACL, as a pure function.

Every device topic is ``af/{device_id}/<channel>``. A device publishes only its device-to-cloud
channels and subscribes only its cloud-to-device channels, both under its own id; the cloud's
service account subscribes to ``af/...`` (also as a ``$share/<group>/`` shared subscription)
and publishes cloud-to-device channels of any device. The OCPP bridge's account speaks for the
OCPP chargers it holds: it publishes their device-to-cloud channels and subscribes, one device
at a time (no wildcards), to their cloud-to-device channels and their status (to notice that
another bridge instance took a charger over). A quarantined device (not approved, or its
hardware changed: cloud.devices.quarantine) publishes its own status and nothing else, and
subscribes to and receives nothing. Everything else is denied.

``allowed`` is the one decision. The amqtt plugin calls it for every PUBLISH, SUBSCRIBE and
delivery; the Mosquitto roles (broker.mosquitto.dynsec) are generated from the same channel
lists; ``rules_markdown`` documents it (broker/README.md is checked against it by the tests).

The namespace itself (root, channels, device-id rule, parsing) is ``firmware.core.topics``; the
names below stay for the broker's modules and the OCPP bridge that import them from here.
"""

from __future__ import annotations

import enum
import re

from firmware.core import topics

TOPIC_ROOT = topics.ROOT

# Device -> cloud: the device may PUBLISH these under its own id.
DEVICE_TO_CLOUD: tuple[str, ...] = topics.DEVICE_TO_CLOUD
# Cloud -> device: the device may SUBSCRIBE to (and receive) these under its own id.
CLOUD_TO_DEVICE: tuple[str, ...] = topics.CLOUD_TO_DEVICE

# A quarantined device may PUBLISH only these under its own id (its status, so the cloud sees it
# and lists it for approval); it may SUBSCRIBE to and RECEIVE nothing.
QUARANTINE_PUBLISH: tuple[str, ...] = (topics.STATUS,)

# The device id is the MQTT client id, username, topic level and certificate CN: no '/', '+',
# '#' or '$', so it can never widen a topic filter.
DEVICE_ID = re.compile(topics.DEVICE_ID_PATTERN)
_SHARE_GROUP = re.compile(r"^[^/+#]+$")


class Action(enum.StrEnum):
    """What a client does with a topic."""

    PUBLISH = "publish"  # send a PUBLISH to the topic name (also its will message)
    SUBSCRIBE = "subscribe"  # SUBSCRIBE with a topic filter
    RECEIVE = "receive"  # be delivered a message published to the topic name


is_device_id = topics.is_device_id  # whether a value is a well-formed device id


def device_topic(device_id: str, channel: str) -> str:
    """The topic of ``channel`` of one device, or of every device when ``device_id`` is "+"."""
    if device_id == topics.ANY_DEVICE:
        return topics.channel_filter(channel)
    return topics.device_topic(device_id, channel)


def split_shared(topic_filter: str) -> str | None:
    """The filter inside ``$share/<group>/<filter>``; None when it is not a valid shared one.

    A shared subscription names a non-empty group without '/', '+' or '#' (MQTT 5.0 4.8.2).
    """
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not _SHARE_GROUP.match(parts[1]) or not parts[2]:
        return None
    return parts[2]


def _under_root(topic_filter: str) -> bool:
    """Whether every topic the filter can match is under ``af/`` (the root level is literal)."""
    levels = topic_filter.split("/")
    return len(levels) >= 2 and levels[0] == TOPIC_ROOT


def allowed(
    username: str | None,
    action: Action,
    topic: str,
    is_service: bool,
    is_bridge: bool = False,
    quarantined: bool = False,
) -> bool:
    """Whether the client ``username`` may do ``action`` on ``topic`` (a name or a filter).

    ``is_service`` says the client authenticated as the cloud's service account, ``is_bridge``
    as the OCPP bridge's; otherwise the username is a device id, ``quarantined`` when the
    device is in quarantine. Deny by default: anything not explicitly allowed is refused.
    """
    if not topic or "\x00" in topic:
        return False
    if is_service:
        return _service_allowed(action, topic)
    if is_bridge:
        return _bridge_allowed(action, topic)
    if username is None or not is_device_id(username):
        return False
    # Exact topic names only: wildcards are not valid in a PUBLISH (MQTT-3.3.2-2) anyway, and
    # subscriptions must name a cloud-to-device channel literally: no wildcard, no shared
    # subscription, nothing outside the device's own subtree ('#', 'af/#', 'af/+/cmd' never
    # parse as a topic).
    found = topics.match(topic)
    if found is None or found.device_id != username:
        return False
    if quarantined:
        # Not trusted yet: it may say it is there, and hear nothing (no command, no
        # configuration, no firmware) until an admin approves it.
        return action is Action.PUBLISH and found.channel in QUARANTINE_PUBLISH
    if action is Action.PUBLISH:
        return found.channel in DEVICE_TO_CLOUD
    return found.channel in CLOUD_TO_DEVICE


def _service_allowed(action: Action, topic: str) -> bool:
    if action is Action.PUBLISH:
        found = topics.match(topic)
        return found is not None and found.channel in CLOUD_TO_DEVICE
    if action is Action.SUBSCRIBE:
        if topic.startswith("$share/"):
            inner = split_shared(topic)
            return inner is not None and _under_root(inner)
        return _under_root(topic)
    return _under_root(topic) and "+" not in topic and "#" not in topic


# What the bridge follows for each charger it holds (the topic namespace says it).
BRIDGE_FOLLOWS: tuple[str, ...] = topics.BRIDGE_FOLLOWS


def _bridge_allowed(action: Action, topic: str) -> bool:
    found = topics.match(topic)
    if found is None:
        return False  # also every wildcard filter: '+' and '#' are not in a device id
    if action is Action.PUBLISH:
        return found.channel in DEVICE_TO_CLOUD
    return found.channel in BRIDGE_FOLLOWS


def rules_markdown() -> str:
    """The ACL as a Markdown table: the documentation generated from the decision's inputs."""
    up = ", ".join(f"`{c}`" for c in DEVICE_TO_CLOUD)
    down = ", ".join(f"`{c}`" for c in CLOUD_TO_DEVICE)
    quarantine = ", ".join(f"`af/<id>/{c}`" for c in QUARANTINE_PUBLISH)
    rows = [
        "| client | publish | subscribe (and receive) |",
        "| --- | --- | --- |",
        f"| device `<id>` (username = client id = `<id>`) | `af/<id>/<channel>` for {up} "
        f"| `af/<id>/<channel>` for {down}, literally (no wildcards) |",
        "| quarantined device `<id>` (not approved, or its hardware IDs changed) "
        f"| {quarantine} only | nothing |",
        f"| service account | `af/<any device id>/<channel>` for {down} "
        "| any filter under `af/` (e.g. `af/+/telemetry`, `af/#`), also as "
        "`$share/<group>/af/...` |",
        f"| OCPP bridge account | `af/<any device id>/<channel>` for {up} "
        f"| `af/<one device id>/<channel>` for {down}, `status`, literally (no wildcards) |",
        "| anonymous, anyone else | nothing (refused at CONNECT) | nothing |",
    ]
    return "\n".join(rows) + "\n"
