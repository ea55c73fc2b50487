"""broker.acl.allowed, the one ACL decision, tested directly; and what is generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.acl import (
    CLOUD_TO_DEVICE,
    DEVICE_TO_CLOUD,
    QUARANTINE_PUBLISH,
    Action,
    allowed,
    is_device_id,
    rules_markdown,
    split_shared,
)
from broker.mosquitto import dynsec

PUBLISH, SUBSCRIBE, RECEIVE = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE
README = Path(__file__).parents[2] / "broker" / "README.md"


@pytest.mark.parametrize("channel", DEVICE_TO_CLOUD)
def test_a_device_publishes_its_device_to_cloud_channels(channel: str) -> None:
    assert allowed("dev-1", PUBLISH, f"af/dev-1/{channel}", False)
    assert not allowed("dev-1", PUBLISH, f"af/dev-2/{channel}", False)
    assert not allowed("dev-1", SUBSCRIBE, f"af/dev-1/{channel}", False)


@pytest.mark.parametrize("channel", CLOUD_TO_DEVICE)
def test_a_device_subscribes_to_its_cloud_to_device_channels(channel: str) -> None:
    assert allowed("dev-1", SUBSCRIBE, f"af/dev-1/{channel}", False)
    assert allowed("dev-1", RECEIVE, f"af/dev-1/{channel}", False)
    assert not allowed("dev-1", PUBLISH, f"af/dev-1/{channel}", False)
    assert not allowed("dev-1", SUBSCRIBE, f"af/dev-2/{channel}", False)
    assert not allowed("dev-1", RECEIVE, f"af/dev-2/{channel}", False)


@pytest.mark.parametrize("channel", DEVICE_TO_CLOUD + CLOUD_TO_DEVICE)
def test_a_quarantined_device_publishes_its_status_and_hears_nothing(channel: str) -> None:
    topic = f"af/dev-1/{channel}"
    assert allowed("dev-1", PUBLISH, topic, False, quarantined=True) == (
        channel in QUARANTINE_PUBLISH
    )
    assert not allowed("dev-1", SUBSCRIBE, topic, False, quarantined=True)
    assert not allowed("dev-1", RECEIVE, topic, False, quarantined=True)
    assert not allowed("dev-1", PUBLISH, f"af/dev-2/{channel}", False, quarantined=True)


def test_quarantine_only_ever_narrows() -> None:
    assert QUARANTINE_PUBLISH == ("status",)
    for channel in DEVICE_TO_CLOUD + CLOUD_TO_DEVICE:
        for action in (PUBLISH, SUBSCRIBE, RECEIVE):
            topic = f"af/dev-1/{channel}"
            if allowed("dev-1", action, topic, False, quarantined=True):
                assert allowed("dev-1", action, topic, False), (action, topic)
    for topic in ("#", "af/#", "af/+/status", "af/dev-1/#", "$share/g/af/dev-1/status"):
        assert not allowed("dev-1", SUBSCRIBE, topic, False, quarantined=True)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "af/#",
        "af/+/cmd",
        "af/dev-1/#",
        "af/dev-1/+",
        "af/+/#",
        "af/dev-1/cmd/#",
        "$share/g/af/dev-1/cmd",
        "$SYS/#",
        "af/dev-1",
        "af/dev-1/",
        "af/dev-1/cmd/extra",
        "AF/dev-1/cmd",
        "",
        "af/dev-1/cmd\x00",
    ],
)
def test_a_device_cannot_subscribe_beyond_its_literal_channels(topic_filter: str) -> None:
    assert not allowed("dev-1", SUBSCRIBE, topic_filter, False)


def test_usernames_that_are_not_device_ids_get_nothing() -> None:
    for username in (None, "", "a/b", "+", "#", "$x", "-lead", "x" * 65):
        for topic in ("af/a/b/telemetry", f"af/{username}/telemetry", "af/+/cmd"):
            for action in Action:
                assert not allowed(username, action, topic, False), (username, topic)


def test_the_service_account_reads_everything_under_af_and_writes_commands() -> None:
    for topic_filter in (
        "af/#",
        "af/+/telemetry",
        "af/dev-1/status",
        "$share/ingest/af/+/telemetry",
    ):
        assert allowed("svc", SUBSCRIBE, topic_filter, True), topic_filter
    for topic_filter in (
        "#",
        "+/x",
        "af",
        "$share/ingest/#",
        "$share//af/#",
        "$share/a+/af/#",
        "$share/g",
        "$SYS/#",
        "other/#",
    ):
        assert not allowed("svc", SUBSCRIBE, topic_filter, True), topic_filter
    for channel in CLOUD_TO_DEVICE:
        assert allowed("svc", PUBLISH, f"af/dev-1/{channel}", True)
    for channel in DEVICE_TO_CLOUD:  # it never speaks for a device
        assert not allowed("svc", PUBLISH, f"af/dev-1/{channel}", True)
    assert not allowed("svc", PUBLISH, "af/a+b/cmd", True)
    assert allowed("svc", RECEIVE, "af/dev-1/telemetry", True)
    assert not allowed("svc", RECEIVE, "elsewhere/x", True)


def test_device_ids_and_shared_subscriptions_are_parsed_strictly() -> None:
    assert is_device_id("AC22-000001.a_b") and is_device_id("a")
    assert not any(is_device_id(x) for x in ("", "-a", ".a", "a/b", "a+b", "a#", "é", "x" * 65))
    assert split_shared("$share/ingest/af/+/telemetry") == "af/+/telemetry"
    assert split_shared("$share/ingest/") is None and split_shared("$share//af/#") is None


def _dynsec_allows(acls: list[dict[str, object]], acltype: str, topic: str) -> bool:
    """Mosquitto's rule for one role, as documented: literal or MQTT-wildcard match."""
    for acl in acls:
        pattern = str(acl["topic"])
        if acl["acltype"] != acltype:
            continue
        literal = acltype == "subscribeLiteral"
        if (pattern == topic) if literal else _matches(pattern, topic):
            return bool(acl["allow"])
    return False


def _matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for i, level in enumerate(p):
        if level == "#":
            return True
        if i >= len(t) or level not in ("+", t[i]):
            return False
    return len(p) == len(t)


def test_the_mosquitto_roles_say_what_allowed_says() -> None:
    acls = dynsec.device_acls("dev-1")
    service = dynsec.service_acls()
    topics = [f"af/{d}/{c}" for d in ("dev-1", "dev-2") for c in DEVICE_TO_CLOUD + CLOUD_TO_DEVICE]
    for topic in topics:
        assert _dynsec_allows(acls, "publishClientSend", topic) == allowed(
            "dev-1", PUBLISH, topic, False
        ), topic
        assert _dynsec_allows(acls, "subscribeLiteral", topic) == allowed(
            "dev-1", SUBSCRIBE, topic, False
        ), topic
        assert _dynsec_allows(acls, "publishClientReceive", topic) == allowed(
            "dev-1", RECEIVE, topic, False
        ), topic
        assert _dynsec_allows(service, "publishClientSend", topic) == allowed(
            "svc", PUBLISH, topic, True
        ), topic
        assert _dynsec_allows(service, "publishClientReceive", topic)


def test_the_mosquitto_quarantine_role_says_what_allowed_says() -> None:
    acls = dynsec.device_acls("dev-1", quarantined=True)
    topics = [f"af/{d}/{c}" for d in ("dev-1", "dev-2") for c in DEVICE_TO_CLOUD + CLOUD_TO_DEVICE]
    for topic in topics:
        for acltype, action in (
            ("publishClientSend", PUBLISH),
            ("subscribeLiteral", SUBSCRIBE),
            ("publishClientReceive", RECEIVE),
        ):
            assert _dynsec_allows(acls, acltype, topic) == allowed(
                "dev-1", action, topic, False, quarantined=True
            ), (acltype, topic)


def test_broker_readme_shows_the_generated_rules() -> None:
    assert rules_markdown() in README.read_text(), (
        "regenerate the table: broker.acl.rules_markdown()"
    )
