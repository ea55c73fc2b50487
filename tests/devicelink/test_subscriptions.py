"""The subscription registry and topic matching (MQTT 3.1.1 section 4.7), without a broker."""

from __future__ import annotations

import pytest

from cloud.devicelink.subscriptions import Message, Subscriptions, inner_filter, matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("af/+/telemetry", "af/dev-1/telemetry", True),
        ("af/+/telemetry", "af/dev-1/events", False),
        ("af/+/telemetry", "af/dev-1/telemetry/x", False),
        ("af/+/telemetry", "af//telemetry", True),  # 4.7.1.3: '+' matches an empty level
        ("af/#", "af", True),  # 4.7.1.2: '#' also matches the parent level
        ("af/#", "af/dev-1/config/desired", True),
        ("af/#", "afx/dev-1", False),
        ("#", "af/dev-1/status", True),
        ("#", "$SYS/broker/uptime", False),  # MQTT-4.7.2-1
        ("+/monitor", "$SYS/monitor", False),  # MQTT-4.7.2-1
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("af/dev-1/cmd", "af/dev-1/cmd", True),
        ("af/dev-1/cmd", "af/dev-2/cmd", False),
        ("$share/ingest/af/+/telemetry", "af/dev-1/telemetry", True),  # MQTT 5 4.8.2
        ("$share/ingest/af/+/telemetry", "af/dev-1/status", False),
        ("af/+/+", "af/dev-1/telemetry", True),
        ("af/+", "af/dev-1/telemetry", False),
    ],
)
def test_topics_match_filters_as_mqtt_4_7_says(
    topic_filter: str, topic: str, expected: bool
) -> None:
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["af/#/x", "af/dev+/x", "af/#x", "$share/ingest", "$share//af/#"])
def test_malformed_filters_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        matches(bad, "af/x")


def test_a_shared_filter_is_matched_by_its_inner_filter() -> None:
    assert inner_filter("$share/status/af/+/status") == "af/+/status"
    assert inner_filter("af/+/status") == "af/+/status"


def _message(topic: str) -> Message:
    return Message(topic, b"{}", 1, False, 7, 1)


def test_exact_and_wildcard_handlers_all_get_a_matching_message() -> None:
    got: list[str] = []
    registry = Subscriptions()
    registry.add("af/dev-1/cmd", 1, lambda m: got.append("exact"))
    registry.add("af/+/cmd", 1, lambda m: got.append("wildcard"))
    registry.add("$share/g/af/#", 0, lambda m: got.append("shared"))
    for handler in registry.handlers("af/dev-1/cmd"):
        handler(_message("af/dev-1/cmd"))
    assert got == ["exact", "wildcard", "shared"]
    assert list(registry.handlers("other/topic")) == []


def test_registering_the_same_handler_twice_delivers_once_and_restates_one_filter() -> None:
    got: list[str] = []

    def handler(message: Message) -> None:
        got.append(message.topic)

    registry = Subscriptions()
    for _ in range(2):
        registry.add("af/dev-1/cmd", 1, handler)
        registry.add("af/+/status", 1, handler)
    assert len(registry) == 2
    assert sorted(registry.filters()) == [("af/+/status", 1), ("af/dev-1/cmd", 1)]
    for h in registry.handlers("af/dev-1/cmd"):
        h(_message("af/dev-1/cmd"))
    assert got == ["af/dev-1/cmd"]


def test_removed_filters_get_nothing_and_are_not_restated() -> None:
    registry = Subscriptions()
    registry.add("af/dev-1/cmd", 1, lambda m: None)
    registry.add("af/+/status", 1, lambda m: None)
    assert registry.remove("af/dev-1/cmd") and registry.remove("af/+/status")
    assert not registry.remove("af/+/status")
    assert registry.filters() == [] and list(registry.handlers("af/dev-1/cmd")) == []
