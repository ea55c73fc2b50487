"""The ampfleet MQTT topic namespace, v1: ``af/{device_id}/{channel}``, written down once.

The root, the channel names, which way each channel flows, the device-id rule, how a device's
topic and the cloud's subscription filters are formatted, and how a topic name is parsed, once,
into a frozen ``Topic``. The payload codec (``firmware.core.contract``), the broker's ACL
(``broker.acl``), the firmware and the cloud all take the namespace from here
(docs/device-contract.md, "Topics").

MicroPython: imports nothing; no typing/dataclasses/enum at run time (``TYPE_CHECKING`` is a
plain False that mypy reads as true, as in contract.py); annotations are strings. ``Topic`` is a
tuple subclass: MicroPython cannot override ``__new__`` of a native type, but a subclass may
add properties, ``__repr__`` and a ``__setattr__`` that refuses, which is all a value needs.

Exceptions::

    ValueError
     +-- TopicError   .reason: "bad_topic", .field: "device_id", "channel" or None, .detail
"""

TYPE_CHECKING = False  # mypy treats the name as true; nothing below runs on any interpreter
if TYPE_CHECKING:
    from typing import NoReturn

    _Pair = tuple[str, str]
else:
    _Pair = tuple

ROOT = "af"

# Channels: the part of the topic after ``af/{device_id}/``.
TELEMETRY = "telemetry"
STATUS = "status"
EVENTS = "events"
CONFIG_REPORTED = "config/reported"
CMD_RESULT = "cmd/result"
OTA_STATUS = "ota/status"
CONFIG_DESIRED = "config/desired"
CMD = "cmd"
OTA = "ota"
AUTH_LIST = "auth/list"
CERT_REQUEST = "cert/request"
CERT = "cert"

# Device -> cloud: a device publishes these under its own id.
DEVICE_TO_CLOUD = (TELEMETRY, STATUS, EVENTS, CONFIG_REPORTED, CMD_RESULT, OTA_STATUS, CERT_REQUEST)
# Cloud -> device: a device subscribes to (and receives) these under its own id.
CLOUD_TO_DEVICE = (CONFIG_DESIRED, CMD, OTA, AUTH_LIST, CERT)
CHANNELS = DEVICE_TO_CLOUD + CLOUD_TO_DEVICE
# What a proxy that speaks for a device (the OCPP bridge) follows for each device it holds: its
# cloud -> device channels, and its status (a newer "online" that the proxy did not publish says
# another proxy instance holds the device now). ``cert`` arrives there too and is ignored: an
# OCPP charger renews its certificate over OCPP's SignCertificate, never asks on the contract.
BRIDGE_FOLLOWS = CLOUD_TO_DEVICE + (STATUS,)  # noqa: RUF005 - MicroPython-safe

# The device id is the MQTT client id, username, topic level and certificate CN: no '/', '+',
# '#' or '$', so it never widens a filter. The pattern is for regex users (the broker, request
# schemas); is_device_id checks the same rule without ``re``.
DEVICE_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_DEVICE_ID_LENGTH = 64
ANY_DEVICE = "+"  # the single-level wildcard (MQTT-4.7.1-2) in the device-id level
EVERYTHING = ROOT + "/#"  # the filter for every topic of the namespace

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_DEVICE_REST = _ALNUM + "_.-"
_CHANNEL_SET = frozenset(CHANNELS)
_HEAD = ROOT + "/"
_HEAD_LENGTH = len(_HEAD)


class TopicError(ValueError):
    """A topic name or part that is not in the namespace; ``reason`` is always ``bad_topic``."""

    reason = "bad_topic"

    def __init__(self, field: "str | None", detail: str) -> None:
        super().__init__(field, detail)
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def _short(text: object) -> str:
    """A name or part cut for error messages (hostile input can be 64 KB long)."""
    shown = text if type(text) is str else repr(text)
    return shown if len(shown) <= MAX_DEVICE_ID_LENGTH else shown[:MAX_DEVICE_ID_LENGTH] + "..."


def is_device_id(text: object) -> bool:
    """True when ``text`` matches ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$``."""
    # strip(chars) leaves something only when a character lies outside the set: one C-level
    # pass instead of a regex, and it works the same on MicroPython.
    return (
        type(text) is str
        and 0 < len(text) <= MAX_DEVICE_ID_LENGTH
        and text[0] in _ALNUM
        and not text.strip(_DEVICE_REST)
    )


class Topic(_Pair):
    """A device topic, parsed: ``device_id`` and ``channel``; immutable, hashable, ordered.

    Underneath the pair ``(device_id, channel)``, so it unpacks, compares and hashes like that
    tuple. Get one from ``parse``, ``match`` or ``Topic.of``, which check both parts;
    ``str(topic)`` is the topic name.
    """

    __slots__ = ()

    @classmethod
    def of(cls, device_id: str, channel: str) -> "Topic":
        """The topic of ``channel`` of the device ``device_id``; TopicError when either is bad."""
        _check_channel(channel)
        if not is_device_id(device_id):
            raise TopicError("device_id", "bad device id " + _short(device_id))
        return cls((device_id, channel))

    @property
    def device_id(self) -> str:
        """The device the topic belongs to."""
        return self[0]

    @property
    def channel(self) -> str:
        """The channel: one of CHANNELS."""
        return self[1]

    @property
    def name(self) -> str:
        """The topic name ``af/{device_id}/{channel}``."""
        return _HEAD + self[0] + "/" + self[1]

    @property
    def from_device(self) -> bool:
        """True for a device-to-cloud channel, False for a cloud-to-device one."""
        return self[1] in DEVICE_TO_CLOUD

    def __str__(self) -> str:
        return _HEAD + self[0] + "/" + self[1]

    def __repr__(self) -> str:
        return "Topic(" + repr(self[0]) + ", " + repr(self[1]) + ")"

    # CPython refuses new attributes already (empty __slots__); MicroPython needs these.
    def __setattr__(self, name: str, value: object) -> "NoReturn":
        raise AttributeError("Topic is immutable")

    def __delattr__(self, name: str) -> "NoReturn":
        raise AttributeError("Topic is immutable")


def _check_channel(channel: object) -> None:
    if type(channel) is not str or channel not in _CHANNEL_SET:
        raise TopicError("channel", "unknown channel " + _short(channel))


def device_topic(device_id: str, channel: str) -> str:
    """The topic name ``af/{device_id}/{channel}`` of one device; TopicError when a part is bad."""
    _check_channel(channel)
    if not is_device_id(device_id):
        raise TopicError("device_id", "bad device id " + _short(device_id))
    return _HEAD + device_id + "/" + channel


def channel_filter(channel: str) -> str:
    """The filter ``af/+/{channel}``: one channel of every device (what the cloud follows)."""
    _check_channel(channel)
    return _HEAD + ANY_DEVICE + "/" + channel


def parse(name: "str | bytes | bytearray | memoryview") -> Topic:
    """Parse the topic name ``af/{device_id}/{channel}`` (text or UTF-8 bytes); else TopicError.

    Filters never parse: '+' and '#' are not in a device id, and no channel holds them.
    """
    if not isinstance(name, str):
        try:
            name = bytes(name).decode("utf-8")  # umqtt hands topics over as bytes
        except (TypeError, ValueError):
            raise TopicError(None, "topic is not UTF-8 text") from None
    if name[:_HEAD_LENGTH] != _HEAD:
        raise TopicError(None, "topic outside af/: " + _short(name))
    rest = name[_HEAD_LENGTH:]
    cut = rest.find("/")
    if cut < 0:
        raise TopicError(None, "no channel in " + _short(name))
    device_id = rest[:cut]
    channel = rest[cut + 1 :]
    if channel not in _CHANNEL_SET:
        raise TopicError("channel", "unknown channel in " + _short(name))
    if not is_device_id(device_id):
        raise TopicError("device_id", "bad device id in " + _short(name))
    return Topic((device_id, channel))


def match(name: "str | bytes | bytearray | memoryview") -> "Topic | None":
    """The topic in ``name``, or None when it is no topic of the namespace (never raises)."""
    try:
        return parse(name)
    except TopicError:
        return None
