"""The subscription registry: which handler gets a message, by its topic.

As Home Assistant's MQTT client keeps it: exact topics in a dict (one lookup, however many
chargers the OCPP bridge holds), wildcard filters in a list, each matched per MQTT 3.1.1
section 4.7. A shared subscription ``$share/{group}/{filter}`` is delivered under the topic
the publisher used, so it is registered and matched by its inner filter (MQTT 5 4.8.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

SHARE_PREFIX = "$share/"


class Message(NamedTuple):
    """One delivered message. ``mid`` is the packet id of a QoS 1 delivery (None at QoS 0),
    ``generation`` the connection that delivered it (see ``Link.ack``).

    A named tuple rather than a dataclass: one is built per message on the ingest hot path.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int | None
    generation: int


Handler = Callable[[Message], None]


def inner_filter(topic_filter: str) -> str:
    """The filter a broker matches topics against: ``$share/group/f`` -> ``f``."""
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise ValueError(f"malformed shared subscription: {topic_filter!r}")
        return parts[2]
    return topic_filter


def is_wildcard(topic_filter: str) -> bool:
    """Whether a filter holds ``+`` or ``#`` (MQTT 4.7.1)."""
    return "+" in topic_filter or "#" in topic_filter


def _compile(topic_filter: str) -> re.Pattern[str]:
    """A regular expression matching exactly the topics of ``topic_filter`` (MQTT 4.7)."""
    levels = topic_filter.split("/")
    parts: list[str] = []
    for index, level in enumerate(levels):
        if level == "#":
            if index != len(levels) - 1:
                raise ValueError(f"'#' must be the last level: {topic_filter!r}")  # MQTT-4.7.1-2
            # "sport/#" also matches "sport" itself (4.7.1.2): the separator is optional.
            if parts:
                parts[-1] = parts[-1].removesuffix("/")
                parts.append("(?:/.*)?")
            else:
                parts.append(".*")
            break
        if level == "+":
            parts.append("[^/]*")
        elif "+" in level or "#" in level:
            raise ValueError(f"a wildcard must fill a whole level: {topic_filter!r}")  # 4.7.1-3
        else:
            parts.append(re.escape(level))
        if index != len(levels) - 1:
            parts.append("/")
    pattern = "".join(parts)
    # MQTT-4.7.2-1: a filter starting with a wildcard does not match topics starting with '$'.
    if levels[0] in ("+", "#"):
        pattern = "(?!\\$)" + pattern
    return re.compile(pattern)


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 4.7; ``$share/`` filters by their inner
    filter)."""
    inner = inner_filter(topic_filter)
    if not is_wildcard(inner):
        return inner == topic
    return _compile(inner).fullmatch(topic) is not None


class Subscription(NamedTuple):
    """One registered filter: what is sent to the broker, and who gets its messages."""

    topic_filter: str  # as subscribed, $share prefix included
    qos: int
    handler: Handler


class _Route(NamedTuple):
    """Who gets the messages of an exact filter: shared by every topic registered alike."""

    prefix: str  # "" or the "$share/{group}/" the filter was subscribed with
    qos: int
    handler: Handler


class Subscriptions:
    """Filters and their handlers; ``handlers(topic)`` finds who gets a message.

    An exact topic costs a dict key and nothing else: its routes are one interned tuple shared
    by every topic registered the same way. The OCPP bridge registers five topics per charger
    it holds; with a list and a record per topic, 10,000 chargers were 100,000 more objects for
    the garbage collector to walk on every full collection (measured: about 1 KiB per charger
    and 6-8 % more CPU per message in the bridge).
    """

    def __init__(self) -> None:
        self._exact: dict[str, tuple[_Route, ...]] = {}
        self._wildcards: list[tuple[re.Pattern[str], Subscription]] = []
        self._interned: dict[tuple[_Route, ...], tuple[_Route, ...]] = {}

    def add(self, topic_filter: str, qos: int, handler: Handler) -> Subscription:
        """Register ``handler`` for ``topic_filter`` (a filter may have several handlers; the same
        handler registered again for the same filter replaces the first registration, so a
        message is never handled twice by it)."""
        inner = inner_filter(topic_filter)
        subscription = Subscription(topic_filter, qos, handler)
        if is_wildcard(inner):
            self._wildcards = [
                w
                for w in self._wildcards
                if (w[1].topic_filter, w[1].handler) != (topic_filter, handler)
            ]
            self._wildcards.append((_compile(inner), subscription))
        else:
            prefix = topic_filter[: len(topic_filter) - len(inner)]
            kept = tuple(
                r for r in self._exact.get(inner, ()) if (r.prefix, r.handler) != (prefix, handler)
            )
            routes = (*kept, _Route(prefix, qos, handler))
            self._exact[inner] = self._interned.setdefault(routes, routes)
        return subscription

    def remove(self, topic_filter: str) -> bool:
        """Forget every handler of ``topic_filter``; whether it was registered."""
        inner = inner_filter(topic_filter)
        if not is_wildcard(inner):
            return self._exact.pop(inner, None) is not None
        before = len(self._wildcards)
        self._wildcards = [w for w in self._wildcards if w[1].topic_filter != topic_filter]
        return len(self._wildcards) != before

    def handlers(self, topic: str) -> Iterator[Handler]:
        """The handlers of every filter ``topic`` matches (a topic with none is dropped)."""
        for route in self._exact.get(topic, ()):
            yield route.handler
        for pattern, subscription in self._wildcards:
            if pattern.fullmatch(topic) is not None:
                yield subscription.handler

    def dispatch(self, message: Message, failed: Callable[[Message], None]) -> None:
        """Hand ``message`` to every handler whose filter matches its topic; a handler that
        raises is reported to ``failed`` (inside its ``except``) and the others still run.

        ``handlers`` unrolled, without a generator: this runs once per message received.
        """
        topic = message.topic
        exact = self._exact.get(topic)
        if exact is not None:
            for route in exact:
                try:
                    route.handler(message)
                except Exception:
                    failed(message)
        for pattern, subscription in self._wildcards:
            if pattern.fullmatch(topic) is not None:
                try:
                    subscription.handler(message)
                except Exception:
                    failed(message)

    def filters(self) -> list[tuple[str, int]]:
        """(filter, QoS) of every registration, each filter once: what a CONNACK restates."""
        seen: dict[str, int] = {}
        for inner, routes in self._exact.items():
            for route in routes:
                topic_filter = route.prefix + inner
                seen[topic_filter] = max(route.qos, seen.get(topic_filter, 0))
        for _pattern, subscription in self._wildcards:
            seen[subscription.topic_filter] = max(
                subscription.qos, seen.get(subscription.topic_filter, 0)
            )
        return list(seen.items())

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + len(self._wildcards)
