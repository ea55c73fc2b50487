"""The ampfleet MQTT device contract, v1: topics, payload codec and limits.

One I/O-free module shared by the cloud (CPython), the firmware (MicroPython on the ESP32-C3) and
the simulators. It turns topics and payload bytes into small value objects and back, and applies
every rule of ``docs/device-contract.md`` on the way in *and* on the way out, so that the firmware
never emits what the cloud would reject. Time is never read here: callers pass ``now_ms``.

The topic namespace (root, channels, device ids, parsing into a frozen ``Topic``) lives in
``firmware.core.topics``; the names here (``TELEMETRY``, ``topic``, ``parse_topic`` ...) stay as
its aliases and wrappers, raising ContractError("bad_topic") as before.

MicroPython: only ``json`` and ``firmware.core.topics`` are imported; no typing/dataclasses/enum;
plain classes with ``__slots__``; annotations are strings or builtins and are never evaluated by
MicroPython.
``mpy-cross`` must compile this file (tests/firmware/test_contract.py checks it).

Exceptions::

    Exception
     +-- ContractError   .reason: one of REASONS, .field: offending field (or None)
"""

import json

from firmware.core import topics

TYPE_CHECKING = False  # mypy treats the name as true; nothing below runs on any interpreter
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TypeAlias

    from firmware.core.topics import Topic

    Scalar: TypeAlias = "bool | int | float | str"  # one telemetry value
    JsonObject: TypeAlias = "dict[str, object]"  # an open map: any JSON inside, checked

PREFIX = topics.ROOT
CONTRACT_VERSION = 1

# Channels: the part of the topic after ``af/{device_id}/``; the namespace is firmware.core.topics,
# these names stay because the firmware and the cloud read them from here.
TELEMETRY = topics.TELEMETRY
STATUS = topics.STATUS
EVENTS = topics.EVENTS
CONFIG_REPORTED = topics.CONFIG_REPORTED
CMD_RESULT = topics.CMD_RESULT
OTA_STATUS = topics.OTA_STATUS
CONFIG_DESIRED = topics.CONFIG_DESIRED
CMD = topics.CMD
OTA = topics.OTA
AUTH_LIST = topics.AUTH_LIST
CERT_REQUEST = topics.CERT_REQUEST
CERT = topics.CERT

UPLINK = topics.DEVICE_TO_CLOUD
DOWNLINK = topics.CLOUD_TO_DEVICE
CHANNELS = topics.CHANNELS

QOS = {
    TELEMETRY: 1,
    STATUS: 1,
    EVENTS: 1,
    CONFIG_REPORTED: 1,
    CMD_RESULT: 1,
    OTA_STATUS: 1,
    CONFIG_DESIRED: 1,
    CMD: 1,
    OTA: 1,
    AUTH_LIST: 1,
    CERT_REQUEST: 1,
    CERT: 1,
}
RETAINED = {
    TELEMETRY: False,
    STATUS: True,
    EVENTS: False,
    CONFIG_REPORTED: True,
    CMD_RESULT: False,
    OTA_STATUS: False,
    CONFIG_DESIRED: True,
    CMD: False,
    OTA: True,
    AUTH_LIST: True,
    # A certificate is an answer to one request: retained, it would be handed again to the
    # device at every reconnect, and outlive a revocation. The device asks again instead.
    CERT_REQUEST: False,
    CERT: False,
}

# Limits (docs/device-contract.md, "Limits").
MAX_PAYLOAD_BYTES = 16384
MAX_CLOCK_SKEW_MS = 300000
MAX_VALUES = 256
MAX_STRING = 256
MAX_ID_LENGTH = 64
MAX_URL_LENGTH = 1024
MAX_SIGNATURE_LENGTH = 1024
MAX_DEPTH = 8
MAX_HARDWARE_ID = 32  # hex digits: 16 bytes, the widest MCU unique id we know (STM32: 12)
MAX_SLAVES = 16  # slave MCUs on one master's I2C bus
MAX_PEM = 8192  # characters of one PEM field (a CSR; a certificate chain of three is ~2.3 KB)
MAX_SERIAL = 40  # hex digits of a certificate serial (20 bytes, RFC 5280 4.1.2.2)
MAX_AUTH_TOKENS = 200  # a local list of 200 cards stays well inside MAX_PAYLOAD_BYTES
MAX_SAFE_INT = 9007199254740991  # 2**53 - 1: exact in every JSON reader, JavaScript included
INT_MIN = -9223372036854775808  # telemetry integers are int64 in InfluxDB and SQLite
INT_MAX = 9223372036854775807

DEFAULT_NODE = "master"
STATUS_STATES = ("online", "offline")
SEVERITIES = ("info", "warning", "error", "critical")
# Events the device must not lose to an overflow of its offline buffer (contract 7): the
# records of charging sessions, which billing is made of. They have a buffer of their own.
MUST_DELIVER = ("charging.started", "charging.meter_start", "charging.stopped")
# The event reporting session events lost all the same (its own buffer overflowed).
SESSIONS_LOST = "charging.lost"
COMMAND_STATUSES = ("accepted", "ok", "rejected", "error")
OTA_STATES = ("downloading", "verifying", "installed", "confirmed", "failed", "rolled_back")

REASONS = (
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "bad_version",
    "missing_field",
    "unknown_field",
    "bad_type",
    "bad_value",
    "future_timestamp",
    "bad_topic",
)

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
_ALNUM = _LOWER + _LOWER.upper() + _DIGITS
_NAME_REST = _LOWER + _DIGITS + "_."
_NODE_REST = _LOWER + _DIGITS + "_-"
_COMMAND_ID_CHARS = _ALNUM + "_.:-"
_HEX = "0123456789abcdef"

# Parameter ids and node ids already found valid: telemetry repeats the same few dozen ids, so a
# set lookup replaces the character check on the ingest worker's hot path. The caches are
# immutable snapshots (frozensets) that a learner replaces whole and never changes in place:
# several worker threads decode at once, and a shared set cleared or grown under another
# thread's issuperset/iteration is a data race (free-threaded CPython, MicroPython's _thread).
# Rebinding a module global is atomic, so a reader sees the old snapshot or the new one; a
# learner that loses a race only loses its addition (the ids are checked again next time), and
# what is accepted or refused never depends on the cache. Bounded: a snapshot that would grow
# past the limit starts over, so hostile ids cannot grow it.
_known_names = frozenset()  # type: frozenset[str]
_KNOWN_NAMES_MAX = 4096
_known_nodes = frozenset((DEFAULT_NODE,))  # type: frozenset[str]
_KNOWN_NODES_MAX = 256

try:  # CPython: raw UTF-8 is shorter than \u escapes; MicroPython's dumps has no such option
    json.dumps("", ensure_ascii=False)
    _DUMPS_OPTIONS = {"ensure_ascii": False}  # type: dict[str, Any]
except TypeError:  # pragma: no cover - MicroPython only
    _DUMPS_OPTIONS = {}


class ContractError(Exception):
    """A topic or payload that breaks the contract; ``reason`` is a stable machine code."""

    def __init__(self, reason: str, field: "str | None" = None, detail: "str | None" = None):
        super().__init__(reason, field, detail)
        self.reason = reason
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        text = self.reason
        if self.field is not None:
            text += " in field " + repr(self.field)
        if self.detail:
            text += ": " + self.detail
        return text


def _short(text: object) -> str:
    """A field name or value cut for error messages (hostile input can be 16 KB long)."""
    shown = text if type(text) is str else repr(text)
    return shown if len(shown) <= MAX_ID_LENGTH else shown[:MAX_ID_LENGTH] + "..."


# --- identifiers ----------------------------------------------------------------------------


def _is_identifier(text: object, max_length: int, first: str, rest: str) -> bool:
    # strip(chars) leaves something only when a character lies outside the set: one C-level
    # pass instead of a regex, and it works the same on MicroPython.
    return (
        type(text) is str
        and 0 < len(text) <= max_length
        and text[0] in first
        and not text.strip(rest)
    )


is_device_id = topics.is_device_id  # ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$


def is_parameter_id(text: object) -> bool:
    """True for a parameter id, event type or command name: ``^[a-z][a-z0-9_.]{0,63}$``."""
    return _is_identifier(text, MAX_ID_LENGTH, _LOWER, _NAME_REST)


def is_node_id(text: object) -> bool:
    """True for a node id such as ``master``, ``meter``, ``relay2``: ``^[a-z][a-z0-9_-]{0,31}$``."""
    return _is_identifier(text, 32, _LOWER, _NODE_REST)


# --- topics ---------------------------------------------------------------------------------


def topic(device_id: str, channel: str) -> str:
    """The topic ``af/{device_id}/{channel}``; device id "+" makes the filter for all devices."""
    try:
        if device_id == topics.ANY_DEVICE:
            return topics.channel_filter(channel)
        return topics.device_topic(device_id, channel)
    except topics.TopicError as exc:
        raise ContractError("bad_topic", exc.field, exc.detail) from None


def topic_filter(channel: str) -> str:
    """The subscription filter ``af/+/{channel}``: one channel of every device (cloud side)."""
    return topic(topics.ANY_DEVICE, channel)


def parse_topic(name: "str | bytes | bytearray | memoryview") -> "Topic":
    """Parse ``af/{device_id}/{channel}`` into a ``Topic``, which unpacks as the pair
    ``(device_id, channel)``; else bad_topic."""
    try:
        return topics.parse(name)
    except topics.TopicError as exc:
        raise ContractError("bad_topic", exc.field, exc.detail) from None


# --- value objects --------------------------------------------------------------------------


class _Message:
    """Base of the decoded messages: equality and repr over ``__slots__``."""

    __slots__ = ()  # type: tuple[str, ...]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # values maps are dicts: not hashable

    def __repr__(self) -> str:
        fields = ", ".join(name + "=" + repr(getattr(self, name)) for name in self.__slots__)
        return type(self).__name__ + "(" + fields + ")"


class Telemetry(_Message):
    """One sample of one node: ``values`` maps parameter ids to numbers, booleans or strings."""

    __slots__ = ("node", "seq", "ts", "values")

    def __init__(self, ts: int, seq: int, node: str, values: "dict[str, Scalar]") -> None:
        self.ts = ts
        self.seq = seq
        self.node = node
        self.values = values


class Status(_Message):
    """Online/offline state; ``ts`` is None in the last will, ``fw``/``schema``/``hw`` when
    announced. ``hw`` is ``{"chip": id, "slaves": {node: id}}``: the hardware found at boot."""

    __slots__ = ("fw", "hw", "schema", "state", "ts")

    def __init__(
        self,
        state: str,
        ts: "int | None",
        fw: "str | None",
        schema: "str | None",
        hw: "JsonObject | None" = None,
    ):
        self.state = state
        self.ts = ts
        self.fw = fw
        self.schema = schema
        self.hw = hw


class Event(_Message):
    """Something that happened on a node; ``data`` is {} when the device sent none."""

    __slots__ = ("data", "node", "seq", "severity", "ts", "type")

    def __init__(
        self, ts: int, seq: int, node: str, type: str, severity: str, data: "JsonObject"
    ) -> None:
        self.ts = ts
        self.seq = seq
        self.node = node
        self.type = type
        self.severity = severity
        self.data = data


class Config(_Message):
    """A versioned set of parameter values (``config/desired`` and ``config/reported``)."""

    __slots__ = ("values", "version")

    def __init__(self, version: int, values: "JsonObject") -> None:
        self.version = version
        self.values = values


class Command(_Message):
    """A command; ``id`` correlates its results, ``expires`` (ms) is None when it never expires."""

    __slots__ = ("args", "expires", "id", "name")

    def __init__(self, id: str, name: str, args: "JsonObject", expires: "int | None") -> None:
        self.id = id
        self.name = name
        self.args = args
        self.expires = expires

    def expired(self, now_ms: int) -> bool:
        """True when the command must be rejected unexecuted because ``expires`` has passed."""
        return self.expires is not None and now_ms >= self.expires


class CommandResult(_Message):
    """The device's answer to command ``id``; ``result`` is {} when none was sent."""

    __slots__ = ("id", "reason", "result", "status")

    def __init__(self, id: str, status: str, result: "JsonObject", reason: "str | None") -> None:
        self.id = id
        self.status = status
        self.result = result
        self.reason = reason


class AuthList(_Message):
    """A charger's local authorization list (``auth/list``): the cards (OCPP idTokens) it may
    accept without asking, each valid until ``tokens[id]`` (ms) or, when None, for good."""

    __slots__ = ("tokens", "version")

    def __init__(self, version: int, tokens: "dict[str, int | None]") -> None:
        self.version = version
        self.tokens = tokens

    def accepts(self, token: str, now_ms: int) -> bool:
        """True when ``token`` is on the list and still valid at ``now_ms``."""
        if token not in self.tokens:
            return False
        until = self.tokens[token]
        return until is None or now_ms < until


class Ota(_Message):
    """A firmware image to install: where to fetch it and how to verify it."""

    __slots__ = ("sha256", "signature", "size", "url", "version")

    def __init__(self, version: str, url: str, sha256: str, size: int, signature: "str | None"):
        self.version = version
        self.url = url
        self.sha256 = sha256
        self.size = size
        self.signature = signature


class OtaStatus(_Message):
    """Progress of an update to ``version``."""

    __slots__ = ("progress", "reason", "state", "version")

    def __init__(self, version: str, state: str, progress: "int | None", reason: "str | None"):
        self.version = version
        self.state = state
        self.progress = progress
        self.reason = reason


class CertRequest(_Message):
    """A device asks for a new certificate (``cert/request``): for the key of ``csr`` (a PEM
    CSR, CN = the device id), or, with ``recertify`` True, for the key it holds already."""

    __slots__ = ("csr", "recertify")

    def __init__(self, csr: "str | None", recertify: bool) -> None:
        self.csr = csr
        self.recertify = recertify


class CertReply(_Message):
    """The cloud's answer on ``cert``: the certificate (PEM leaf), its chain (leaf, issuing CA,
    root), serial and ``not_after`` (ms); or ``error``, the reason of a refusal."""

    __slots__ = ("certificate", "chain", "error", "not_after", "serial")

    def __init__(
        self,
        certificate: "str | None",
        chain: "str | None",
        serial: "str | None",
        not_after: "int | None",
        error: "str | None",
    ) -> None:
        self.certificate = certificate
        self.chain = chain
        self.serial = serial
        self.not_after = not_after
        self.error = error

    @property
    def ok(self) -> bool:
        """True when the reply carries a certificate (False: ``error`` says why not)."""
        return self.error is None


# --- field checks (shared by decoders and encoders) ------------------------------------------


def _int(value: "Any", field: str, low: int, high: int) -> int:
    """An int (not a bool, not a float) within [low, high]."""
    if type(value) is not int:
        raise ContractError("bad_type", field, "must be an integer")
    if value < low or value > high:
        raise ContractError("bad_value", field, f"must be between {low} and {high}")
    return value


def _ts(value: "Any", field: str, now_ms: "int | None", max_skew_ms: int) -> int:
    """A device timestamp: int ms > 0, at most ``max_skew_ms`` after ``now_ms`` when given."""
    if type(value) is not int:
        raise ContractError("bad_type", field, "must be an integer (ms since the epoch)")
    if value <= 0 or value > MAX_SAFE_INT:
        raise ContractError("bad_value", field, "must be between 1 and 2**53-1")
    if now_ms is not None and value - now_ms > max_skew_ms:
        detail = f"{value - now_ms} ms ahead of the cloud's clock"
        raise ContractError("future_timestamp", field, detail)
    return value


def _text(value: "Any", field: str, max_len: int) -> str:
    """A non-empty string of at most ``max_len`` characters."""
    if type(value) is not str:
        raise ContractError("bad_type", field, "must be a string")
    if not value or len(value) > max_len:
        raise ContractError("bad_value", field, f"must be 1 to {max_len} characters")
    return value


def _reason(value: "Any", field: str) -> str:
    """A free-text reason: a string of at most MAX_STRING characters (may be empty)."""
    if type(value) is not str:
        raise ContractError("bad_type", field, "must be a string")
    if len(value) > MAX_STRING:
        raise ContractError("bad_value", field, f"must be at most {MAX_STRING} characters")
    return value


def _choice(value: "Any", field: str, choices: "tuple[str, ...]") -> str:
    """One of the fixed strings ``choices``."""
    if type(value) is not str:
        raise ContractError("bad_type", field, "must be a string")
    if value not in choices:
        raise ContractError("bad_value", field, "must be one of " + ", ".join(choices))
    return value


def _name(value: "Any", field: str) -> str:
    """An identifier with the parameter-id syntax (event types, command names)."""
    if type(value) is not str:
        raise ContractError("bad_type", field, "must be a string")
    if not is_parameter_id(value):
        raise ContractError("bad_value", field, "must match ^[a-z][a-z0-9_.]{0,63}$")
    return value


def _node(value: "Any") -> str:
    """A node id: ``master`` or a slave MCU's id."""
    if type(value) is not str:
        raise ContractError("bad_type", "node", "must be a string")
    if not is_node_id(value):
        raise ContractError("bad_value", "node", "must match ^[a-z][a-z0-9_-]{0,31}$")
    return value


def _command_id(value: "Any") -> str:
    """A correlation id: 1 to 64 characters of ``[A-Za-z0-9_.:-]`` (UUIDs and ULIDs fit)."""
    text = _text(value, "id", MAX_ID_LENGTH)
    if text.strip(_COMMAND_ID_CHARS):
        raise ContractError("bad_value", "id", "must match ^[A-Za-z0-9_.:-]{1,64}$")
    return text


def _check_name(key: object, field: str) -> str:
    """A parameter id that is not in the cache yet: checked, returned when valid."""
    if type(key) is not str:
        raise ContractError("bad_type", field, "parameter ids must be strings")
    if not is_parameter_id(key):
        detail = "parameter id " + repr(_short(key)) + " must match ^[a-z][a-z0-9_.]{0,63}$"
        raise ContractError("bad_value", field, detail)
    return key


def _learn_names(known: "frozenset[str]", fresh: "list[str]") -> None:
    """Publish a new snapshot of the valid parameter ids: ``known`` (the one read) plus
    ``fresh``; one copy per message, never an in-place change (see _known_names)."""
    global _known_names
    if len(known) + len(fresh) > _KNOWN_NAMES_MAX:
        known = frozenset()
        if len(fresh) > _KNOWN_NAMES_MAX:
            return
    _known_names = known.union(fresh)


def _telemetry_values(values: "Any") -> "dict[str, Scalar]":
    """The values map of a telemetry sample: 1..256 scalar values keyed by parameter id."""
    # The ingest worker's hot loop: one C-level subset test for the ids (almost always cached),
    # then one type() per value; the error details are worked out only once something failed.
    if type(values) is not dict:
        raise ContractError("bad_type", "values", "must be an object")
    count = len(values)
    if count == 0 or count > MAX_VALUES:
        raise ContractError("bad_value", "values", f"must hold 1 to {MAX_VALUES} values")
    known = _known_names  # one snapshot for the whole message
    if not known.issuperset(values):
        _learn_names(known, [_check_name(key, "values") for key in values if key not in known])
    for value in values.values():
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # inf - inf and nan - nan are nan
                break
        elif kind is int:
            if value < INT_MIN or value > INT_MAX:
                break
        elif kind is str:
            if len(value) > MAX_STRING:
                break
        elif kind is not bool:
            break
    else:
        return values
    for key in values:
        _telemetry_value(values[key], "values." + key)
    raise AssertionError("unreachable: a value failed the fast check")  # pragma: no cover


def _telemetry_value(value: "Any", field: str) -> None:
    """One telemetry value: a finite float, an int64, a bool or a string of <= 256 characters."""
    kind = type(value)
    if kind is float:
        if value - value != 0.0:
            raise ContractError("bad_value", field, "must be a finite number")
    elif kind is int:
        if value < INT_MIN or value > INT_MAX:
            raise ContractError("bad_value", field, "must fit in 64 bits")
    elif kind is str:
        if len(value) > MAX_STRING:
            raise ContractError("bad_value", field, f"must be at most {MAX_STRING} characters")
    elif kind is not bool:
        raise ContractError("bad_type", field, "must be a number, a boolean or a string")


def _json_value(value: "Any", field: str, depth: int) -> None:
    """Any JSON value, finite numbers only, nested at most MAX_DEPTH deep (open maps)."""
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:
        return
    if kind is float:
        if value - value != 0.0:
            raise ContractError("bad_value", field, "numbers must be finite")
        return
    if depth >= MAX_DEPTH:
        raise ContractError("bad_value", field, f"nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise ContractError("bad_type", field, "object keys must be strings")
            _json_value(value[key], field, depth + 1)
    elif kind is list or kind is tuple:
        for item in value:
            _json_value(item, field, depth + 1)
    else:
        raise ContractError("bad_type", field, "not a JSON value: " + type(value).__name__)


def _hardware_id(value: "Any", field: str) -> str:
    """A chip's unique id: 2 to 32 lowercase hex digits, whole bytes (``machine.unique_id()``
    in hex: the factory MAC of an ESP32-C3)."""
    if type(value) is not str:
        raise ContractError("bad_type", field, "must be a string")
    if not 2 <= len(value) <= MAX_HARDWARE_ID or len(value) % 2 or value.strip(_HEX):
        raise ContractError("bad_value", field, "must be 2 to 32 lowercase hex digits")
    return value


def _hardware(value: "Any") -> "JsonObject":
    """The status's ``hw``: the master's chip id and each slave's unique id by node."""
    if type(value) is not dict:
        raise ContractError("bad_type", "hw", "must be an object")
    for key in value:
        if key not in ("chip", "slaves"):
            raise ContractError("unknown_field", "hw." + _short(key))
    if "chip" not in value or "slaves" not in value:
        raise ContractError("missing_field", "hw.chip" if "chip" not in value else "hw.slaves")
    _hardware_id(value["chip"], "hw.chip")
    slaves = value["slaves"]
    if type(slaves) is not dict:
        raise ContractError("bad_type", "hw.slaves", "must be an object")
    if len(slaves) > MAX_SLAVES:
        raise ContractError("bad_value", "hw.slaves", "at most " + str(MAX_SLAVES) + " slaves")
    for node in slaves:
        if not is_node_id(node):
            raise ContractError("bad_value", "hw.slaves", "must match ^[a-z][a-z0-9_-]{0,31}$")
        _hardware_id(slaves[node], "hw.slaves." + node)
    return value


def _open_map(value: "Any", field: str) -> "JsonObject":
    """An open object (event data, command args and results): any JSON inside."""
    if type(value) is not dict:
        raise ContractError("bad_type", field, "must be an object")
    _json_value(value, field, 0)
    return value


def _config_values(values: "Any") -> "JsonObject":
    """A config values map: parameter ids to any JSON value (checked later by the schema)."""
    if type(values) is not dict:
        raise ContractError("bad_type", "values", "must be an object")
    known = _known_names  # one snapshot for the whole message
    fresh = []  # type: list[str]
    for key in values:
        if key not in known:
            fresh.append(_check_name(key, "values"))
        _json_value(values[key], "values." + key, 1)
    if fresh:
        _learn_names(known, fresh)
    return values


def _sha256(value: "Any") -> str:
    """64 lowercase hex digits."""
    if type(value) is not str:
        raise ContractError("bad_type", "sha256", "must be a string")
    if len(value) != 64 or value.strip(_HEX):
        raise ContractError("bad_value", "sha256", "must be 64 lowercase hex digits")
    return value


def _url(value: "Any") -> str:
    """An http(s) URL of at most MAX_URL_LENGTH characters."""
    text = _text(value, "url", MAX_URL_LENGTH)
    if not (text.startswith("https://") or text.startswith("http://")):
        raise ContractError("bad_value", "url", "must be an http:// or https:// URL")
    return text


def _pem(value: "Any", field: str, label: str) -> str:
    """A PEM text of at most MAX_PEM characters that holds a ``-----BEGIN <label>`` block."""
    text = _text(value, field, MAX_PEM)
    if "-----BEGIN " + label not in text:
        raise ContractError("bad_value", field, "must be PEM: -----BEGIN " + label + "-----")
    return text


def _serial(value: "Any") -> str:
    """A certificate serial: 1 to 40 lowercase hex digits."""
    text = _text(value, "serial", MAX_SERIAL)
    if text.strip(_HEX):
        raise ContractError("bad_value", "serial", "must be 1 to 40 lowercase hex digits")
    return text


# --- decoding -------------------------------------------------------------------------------


def _is_lone_surrogate_in(text: str) -> bool:
    """True when ``text`` holds a UTF-16 surrogate that is not part of a pair."""
    # CPython's json joins \\ud83d\\ude00 into one character; MicroPython keeps both halves.
    pending_high = False
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDBFF:
            if pending_high:
                return True
            pending_high = True
        elif 0xDC00 <= code <= 0xDFFF:
            if not pending_high:
                return True
            pending_high = False
        elif pending_high:
            return True
    return pending_high


def _has_lone_surrogate(value: "Any") -> bool:
    """True when a string anywhere in ``value`` cannot be written as UTF-8."""
    stack = [value]  # iterative: depth is not checked yet when this runs
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if _is_lone_surrogate_in(item):
                return True
        elif kind is dict:
            for key in item:
                stack.append(key)
                stack.append(item[key])
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False


def _reject_lone_surrogates(obj: "Mapping[str, object]") -> None:
    """Raise not_utf8 naming the top-level field that holds an unpaired surrogate."""
    for key in obj:
        if _has_lone_surrogate(key) or _has_lone_surrogate(obj[key]):
            raise ContractError("not_utf8", _short(key), "unpaired UTF-16 surrogate escape")


def _load(payload: "bytes | bytearray | memoryview | str", max_bytes: int) -> "JsonObject":
    """Size, UTF-8, JSON, object and version checks common to every message."""
    if isinstance(payload, str):
        if len(payload) > max_bytes:
            raise ContractError("too_large", None, f"more than {max_bytes} bytes")
        text = payload
        try:
            size = len(text.encode("utf-8"))
        except UnicodeError:
            raise ContractError("not_utf8", None, "payload is not valid UTF-8") from None
        if size > max_bytes:
            raise ContractError("too_large", None, f"{size} bytes, at most {max_bytes}")
    else:
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        size = len(payload)
        if size > max_bytes:  # before decoding: a hostile payload costs nothing more
            raise ContractError("too_large", None, f"{size} bytes, at most {max_bytes}")
        try:
            text = payload.decode("utf-8")
        except UnicodeError:
            raise ContractError("not_utf8", None, "payload is not valid UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RuntimeError):  # RuntimeError: CPython's RecursionError on deep nesting
        raise ContractError("not_json", None, "payload is not JSON") from None
    if type(obj) is not dict:
        raise ContractError("not_object", None, "payload must be a JSON object")
    if "v" not in obj:
        raise ContractError("missing_field", "v", "payload format version")
    version = obj["v"]
    if type(version) is not int:
        raise ContractError("bad_type", "v", "must be an integer")
    if version != CONTRACT_VERSION:
        raise ContractError("bad_version", "v", f"version {version}, expected {CONTRACT_VERSION}")
    # Unpaired surrogates only come from \\uD8xx escapes (strict UTF-8 refuses them as bytes);
    # a substring test keeps the character walk off the fast path.
    if "\\ud" in text or "\\uD" in text:
        _reject_lone_surrogates(obj)
    return obj


def _fields(obj: "JsonObject", allowed: "set[str]", required: "tuple[str, ...]") -> None:
    """Reject unknown top-level fields and missing required ones."""
    for key in obj:
        if key not in allowed:
            raise ContractError("unknown_field", _short(key), "not part of this message")
    for key in required:
        if key not in obj:
            raise ContractError("missing_field", key, "required")


_TELEMETRY_FIELDS = {"v", "ts", "seq", "node", "values"}
_TELEMETRY_REQUIRED = ("ts", "seq", "values")
_STATUS_FIELDS = {"v", "state", "ts", "fw", "schema", "hw"}
_STATUS_REQUIRED = ("state",)
_EVENT_FIELDS = {"v", "ts", "seq", "node", "type", "severity", "data"}
_EVENT_REQUIRED = ("ts", "seq", "type", "severity")
_CONFIG_FIELDS = {"v", "version", "values"}
_CONFIG_REQUIRED = ("version", "values")
_COMMAND_FIELDS = {"v", "id", "name", "args", "expires"}
_COMMAND_REQUIRED = ("id", "name", "args")
_RESULT_FIELDS = {"v", "id", "status", "result", "reason"}
_RESULT_REQUIRED = ("id", "status")
_OTA_FIELDS = {"v", "version", "url", "sha256", "size", "signature"}
_OTA_REQUIRED = ("version", "url", "sha256", "size")
_OTA_STATUS_FIELDS = {"v", "version", "state", "progress", "reason"}
_OTA_STATUS_REQUIRED = ("version", "state")


def _learn_node(known: "frozenset[str]", node: str) -> None:
    """Publish a new snapshot of the valid node ids: ``known`` plus ``node``."""
    global _known_nodes
    if len(known) >= _KNOWN_NODES_MAX:
        known = frozenset()
    _known_nodes = known.union((node,))


def decode_telemetry(
    payload: "bytes | str",
    now_ms: int,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Telemetry:
    """Decode an ``af/{id}/telemetry`` payload (the ingest worker's hot path)."""
    obj = _load(payload, max_bytes)
    # "v" is in obj (checked by _load): with ts, seq and values there as well, four keys, or five
    # with node, leave no room for an unknown field. Anything else takes the detailed check.
    count = len(obj)
    if not (
        "ts" in obj
        and "seq" in obj
        and "values" in obj
        and (count == 4 or (count == 5 and "node" in obj))
    ):
        _fields(obj, _TELEMETRY_FIELDS, _TELEMETRY_REQUIRED)
    ts = _ts(obj["ts"], "ts", now_ms, max_skew_ms)
    raw = obj["seq"]
    if type(raw) is int and 0 <= raw <= MAX_SAFE_INT:
        seq = raw
    else:
        seq = _int(raw, "seq", 0, MAX_SAFE_INT)  # raises with the precise reason
    node = DEFAULT_NODE
    if "node" in obj:
        raw = obj["node"]
        known = _known_nodes  # a snapshot, replaced whole (see _known_names)
        if type(raw) is str and raw in known:
            node = raw
        else:
            node = _node(raw)
            _learn_node(known, node)
    return Telemetry(ts, seq, node, _telemetry_values(obj["values"]))


def decode_status(
    payload: "bytes | str",
    now_ms: int,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Status:
    """Decode an ``af/{id}/status`` payload, the last will included."""
    obj = _load(payload, max_bytes)
    _fields(obj, _STATUS_FIELDS, _STATUS_REQUIRED)
    return Status(
        _choice(obj["state"], "state", STATUS_STATES),
        _ts(obj["ts"], "ts", now_ms, max_skew_ms) if "ts" in obj else None,
        _text(obj["fw"], "fw", MAX_ID_LENGTH) if "fw" in obj else None,
        _text(obj["schema"], "schema", MAX_ID_LENGTH) if "schema" in obj else None,
        _hardware(obj["hw"]) if "hw" in obj else None,
    )


def decode_event(
    payload: "bytes | str",
    now_ms: int,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Event:
    """Decode an ``af/{id}/events`` payload."""
    obj = _load(payload, max_bytes)
    _fields(obj, _EVENT_FIELDS, _EVENT_REQUIRED)
    return Event(
        _ts(obj["ts"], "ts", now_ms, max_skew_ms),
        _int(obj["seq"], "seq", 0, MAX_SAFE_INT),
        _node(obj["node"]) if "node" in obj else DEFAULT_NODE,
        _name(obj["type"], "type"),
        _choice(obj["severity"], "severity", SEVERITIES),
        _open_map(obj["data"], "data") if "data" in obj else {},
    )


def decode_config(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Config:
    """Decode an ``af/{id}/config/desired`` or ``af/{id}/config/reported`` payload."""
    obj = _load(payload, max_bytes)
    _fields(obj, _CONFIG_FIELDS, _CONFIG_REQUIRED)
    return Config(_int(obj["version"], "version", 0, MAX_SAFE_INT), _config_values(obj["values"]))


def decode_command(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Command:
    """Decode an ``af/{id}/cmd`` payload; whether it expired is ``Command.expired(now_ms)``."""
    obj = _load(payload, max_bytes)
    _fields(obj, _COMMAND_FIELDS, _COMMAND_REQUIRED)
    return Command(
        _command_id(obj["id"]),
        _name(obj["name"], "name"),
        _open_map(obj["args"], "args"),
        _int(obj["expires"], "expires", 1, MAX_SAFE_INT) if "expires" in obj else None,
    )


def decode_command_result(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> CommandResult:
    """Decode an ``af/{id}/cmd/result`` payload."""
    obj = _load(payload, max_bytes)
    _fields(obj, _RESULT_FIELDS, _RESULT_REQUIRED)
    return CommandResult(
        _command_id(obj["id"]),
        _choice(obj["status"], "status", COMMAND_STATUSES),
        _open_map(obj["result"], "result") if "result" in obj else {},
        _reason(obj["reason"], "reason") if "reason" in obj else None,
    )


def decode_ota(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> Ota:
    """Decode an ``af/{id}/ota`` payload (an empty retained payload means: nothing pending)."""
    obj = _load(payload, max_bytes)
    _fields(obj, _OTA_FIELDS, _OTA_REQUIRED)
    version = _text(obj["version"], "version", MAX_ID_LENGTH)
    url = _url(obj["url"])
    sha256 = _sha256(obj["sha256"])
    size = _int(obj["size"], "size", 1, MAX_SAFE_INT)
    signature = None
    if "signature" in obj:
        signature = _text(obj["signature"], "signature", MAX_SIGNATURE_LENGTH)
    return Ota(version, url, sha256, size, signature)


def decode_ota_status(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> OtaStatus:
    """Decode an ``af/{id}/ota/status`` payload."""
    obj = _load(payload, max_bytes)
    _fields(obj, _OTA_STATUS_FIELDS, _OTA_STATUS_REQUIRED)
    return OtaStatus(
        _text(obj["version"], "version", MAX_ID_LENGTH),
        _choice(obj["state"], "state", OTA_STATES),
        _int(obj["progress"], "progress", 0, 100) if "progress" in obj else None,
        _reason(obj["reason"], "reason") if "reason" in obj else None,
    )


_AUTH_LIST_FIELDS = {"v", "version", "tokens"}
_AUTH_LIST_REQUIRED = ("version", "tokens")
_TOKEN_FIELDS = {"id", "until"}
_TOKEN_REQUIRED = ("id",)


def _auth_tokens(value: "Any") -> "dict[str, int | None]":
    if type(value) is not list:
        raise ContractError("bad_type", "tokens", "must be an array")
    if len(value) > MAX_AUTH_TOKENS:
        raise ContractError("too_large", "tokens", f"more than {MAX_AUTH_TOKENS} tokens")
    tokens = {}  # type: dict[str, int | None]
    for item in value:
        if type(item) is not dict:
            raise ContractError("bad_type", "tokens", "each token must be an object")
        _fields(item, _TOKEN_FIELDS, _TOKEN_REQUIRED)
        token = _text(item["id"], "tokens.id", MAX_ID_LENGTH)
        if token in tokens:
            raise ContractError("bad_value", "tokens.id", "duplicate token " + _short(token))
        until = item.get("until")
        tokens[token] = None if until is None else _int(until, "tokens.until", 1, MAX_SAFE_INT)
    return tokens


def decode_auth_list(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> AuthList:
    """Decode an ``af/{id}/auth/list`` payload (retained: the complete list, not a delta)."""
    obj = _load(payload, max_bytes)
    _fields(obj, _AUTH_LIST_FIELDS, _AUTH_LIST_REQUIRED)
    return AuthList(_int(obj["version"], "version", 0, MAX_SAFE_INT), _auth_tokens(obj["tokens"]))


_CERT_REQUEST_FIELDS = {"v", "csr", "recertify"}
_CERT_FIELDS = {"v", "certificate", "chain", "serial", "not_after", "error"}
_CERT_REQUIRED = ("certificate", "chain", "serial", "not_after")


def _cert_request(obj: "JsonObject") -> CertRequest:
    _fields(obj, _CERT_REQUEST_FIELDS, ())
    if "recertify" in obj:
        if obj["recertify"] is not True:
            raise ContractError("bad_value", "recertify", "must be true when present")
        if "csr" in obj:
            raise ContractError("bad_value", "csr", "a CSR or recertify, not both")
        return CertRequest(None, True)
    if "csr" not in obj:
        raise ContractError("missing_field", "csr", "a CSR, or recertify: true")
    return CertRequest(_pem(obj["csr"], "csr", "CERTIFICATE REQUEST"), False)


def decode_cert_request(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> CertRequest:
    """Decode an ``af/{id}/cert/request`` payload."""
    return _cert_request(_load(payload, max_bytes))


def _cert_reply(obj: "JsonObject") -> CertReply:
    if "error" in obj:
        _fields(obj, {"v", "error"}, ())
        error = _text(obj["error"], "error", MAX_STRING)
        return CertReply(None, None, None, None, error)
    _fields(obj, _CERT_FIELDS, _CERT_REQUIRED)
    return CertReply(
        _pem(obj["certificate"], "certificate", "CERTIFICATE"),
        _pem(obj["chain"], "chain", "CERTIFICATE"),
        _serial(obj["serial"]),
        _int(obj["not_after"], "not_after", 1, MAX_SAFE_INT),
        None,
    )


def decode_cert(
    payload: "bytes | str",
    now_ms: "int | None" = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> CertReply:
    """Decode an ``af/{id}/cert`` payload: a certificate, or an error."""
    return _cert_reply(_load(payload, max_bytes))


_DECODERS = {
    TELEMETRY: decode_telemetry,
    STATUS: decode_status,
    EVENTS: decode_event,
    CONFIG_REPORTED: decode_config,
    CMD_RESULT: decode_command_result,
    OTA_STATUS: decode_ota_status,
    CONFIG_DESIRED: decode_config,
    CMD: decode_command,
    OTA: decode_ota,
    AUTH_LIST: decode_auth_list,
    CERT_REQUEST: decode_cert_request,
    CERT: decode_cert,
}


def decode(
    channel: str,
    payload: "bytes | str",
    now_ms: int,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_skew_ms: int = MAX_CLOCK_SKEW_MS,
) -> _Message:
    """Decode the payload of any channel into its message object."""
    decoder = _DECODERS.get(channel) if type(channel) is str else None
    if decoder is None:
        raise ContractError("bad_topic", "channel", "unknown channel " + _short(channel))
    return decoder(payload, now_ms, max_bytes, max_skew_ms)


# --- encoding -------------------------------------------------------------------------------


def _dump(obj: "Mapping[str, object]") -> bytes:
    """Compact JSON bytes, refused when larger than MAX_PAYLOAD_BYTES or not UTF-8-clean."""
    text = json.dumps(obj, separators=(",", ":"), **_DUMPS_OPTIONS)
    try:
        data = text.encode("utf-8")
    except UnicodeError:  # CPython: a surrogate in some string
        _reject_lone_surrogates(obj)  # names the field when the surrogate is unpaired
        raise ContractError("not_utf8", None, "surrogate characters in a string") from None
    if len(data) > MAX_PAYLOAD_BYTES:
        detail = f"{len(data)} bytes, at most {MAX_PAYLOAD_BYTES}"
        raise ContractError("too_large", None, detail)
    return data


def encode_telemetry(
    ts: int, seq: int, values: "Mapping[str, Scalar]", node: "str | None" = None
) -> bytes:
    """Payload of ``af/{id}/telemetry``: one sample of ``node`` (default master)."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "ts": _ts(ts, "ts", None, 0),
        "seq": _int(seq, "seq", 0, MAX_SAFE_INT),
    }
    if node is not None:
        obj["node"] = _node(node)
    obj["values"] = _telemetry_values(values)
    return _dump(obj)


def encode_status(
    state: str,
    ts: "int | None" = None,
    fw: "str | None" = None,
    schema: "str | None" = None,
    hw: "Mapping[str, object] | None" = None,
) -> bytes:
    """Payload of ``af/{id}/status`` (retained); ``encode_status("offline")`` is the last will.
    ``hw``: ``{"chip": id, "slaves": {node: id}}``, the hardware IDs read at boot."""
    obj = {"v": CONTRACT_VERSION, "state": _choice(state, "state", STATUS_STATES)}  # type: dict[str, Any]
    if ts is not None:
        obj["ts"] = _ts(ts, "ts", None, 0)
    if fw is not None:
        obj["fw"] = _text(fw, "fw", MAX_ID_LENGTH)
    if schema is not None:
        obj["schema"] = _text(schema, "schema", MAX_ID_LENGTH)
    if hw is not None:
        obj["hw"] = _hardware(dict(hw))
    return _dump(obj)


# The MQTT will message, set at CONNECT with topic af/{id}/status, QoS 1, retain.
LAST_WILL = b'{"v":1,"state":"offline"}'


def encode_event(
    ts: int,
    seq: int,
    type: str,
    severity: str,
    data: "Mapping[str, object] | None" = None,
    node: "str | None" = None,
) -> bytes:
    """Payload of ``af/{id}/events``."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "ts": _ts(ts, "ts", None, 0),
        "seq": _int(seq, "seq", 0, MAX_SAFE_INT),
    }
    if node is not None:
        obj["node"] = _node(node)
    obj["type"] = _name(type, "type")
    obj["severity"] = _choice(severity, "severity", SEVERITIES)
    if data is not None:
        obj["data"] = _open_map(data, "data")
    return _dump(obj)


def encode_config(version: int, values: "Mapping[str, object]") -> bytes:
    """Payload of ``af/{id}/config/desired`` or ``af/{id}/config/reported``."""
    obj = {"v": CONTRACT_VERSION, "version": _int(version, "version", 0, MAX_SAFE_INT)}  # type: dict[str, Any]
    obj["values"] = _config_values(values)
    return _dump(obj)


def encode_command(
    id: str, name: str, args: "Mapping[str, object]", expires: "int | None" = None
) -> bytes:
    """Payload of ``af/{id}/cmd``; ``id`` is the correlation id the results carry."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "id": _command_id(id),
        "name": _name(name, "name"),
        "args": _open_map(args, "args"),
    }
    if expires is not None:
        obj["expires"] = _int(expires, "expires", 1, MAX_SAFE_INT)
    return _dump(obj)


def encode_command_result(
    id: str, status: str, result: "Mapping[str, object] | None" = None, reason: "str | None" = None
) -> bytes:
    """Payload of ``af/{id}/cmd/result``."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "id": _command_id(id),
        "status": _choice(status, "status", COMMAND_STATUSES),
    }
    if result is not None:
        obj["result"] = _open_map(result, "result")
    if reason is not None:
        obj["reason"] = _reason(reason, "reason")
    return _dump(obj)


def encode_ota(
    version: str, url: str, sha256: str, size: int, signature: "str | None" = None
) -> bytes:
    """Payload of ``af/{id}/ota`` (retained)."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "version": _text(version, "version", MAX_ID_LENGTH),
        "url": _url(url),
        "sha256": _sha256(sha256),
        "size": _int(size, "size", 1, MAX_SAFE_INT),
    }
    if signature is not None:
        obj["signature"] = _text(signature, "signature", MAX_SIGNATURE_LENGTH)
    return _dump(obj)


def encode_ota_status(
    version: str, state: str, progress: "int | None" = None, reason: "str | None" = None
) -> bytes:
    """Payload of ``af/{id}/ota/status``."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "version": _text(version, "version", MAX_ID_LENGTH),
        "state": _choice(state, "state", OTA_STATES),
    }
    if progress is not None:
        obj["progress"] = _int(progress, "progress", 0, 100)
    if reason is not None:
        obj["reason"] = _reason(reason, "reason")
    return _dump(obj)


def encode_auth_list(version: int, tokens: "Mapping[str, int | None]") -> bytes:
    """Payload of ``af/{id}/auth/list`` (retained): ``tokens`` maps each card's id to the ms
    it is valid until, or None; listed in sorted order so equal lists encode equally."""
    items = []
    for token in sorted(tokens):
        item = {"id": _text(token, "tokens.id", MAX_ID_LENGTH)}  # type: dict[str, Any]
        if tokens[token] is not None:
            item["until"] = tokens[token]
        items.append(item)
    obj = {"v": CONTRACT_VERSION, "version": _int(version, "version", 0, MAX_SAFE_INT)}  # type: dict[str, Any]
    obj["tokens"] = items
    _auth_tokens(items)  # the same checks as the decoder: never send what a device refuses
    return _dump(obj)


def encode_cert_request(csr: "str | None" = None, recertify: bool = False) -> bytes:
    """Payload of ``af/{id}/cert/request``: a PEM CSR for a new key, or ``recertify=True``
    (the same key again, for a board that cannot make one)."""
    obj = {"v": CONTRACT_VERSION}  # type: dict[str, Any]
    if recertify:
        obj["recertify"] = True
    if csr is not None:
        obj["csr"] = csr
    _cert_request(obj)  # the decoder's checks: never send what the cloud refuses
    return _dump(obj)


def encode_cert(certificate: str, chain: str, serial: str, not_after: int) -> bytes:
    """Payload of ``af/{id}/cert`` carrying a certificate (``not_after`` in ms)."""
    obj = {  # type: dict[str, Any]
        "v": CONTRACT_VERSION,
        "certificate": certificate,
        "chain": chain,
        "serial": serial,
        "not_after": not_after,
    }
    _cert_reply(obj)
    return _dump(obj)


def encode_cert_error(error: str) -> bytes:
    """Payload of ``af/{id}/cert`` refusing a request; ``error`` says why (<= 256 chars)."""
    obj = {"v": CONTRACT_VERSION, "error": error}  # type: dict[str, Any]
    _cert_reply(obj)
    return _dump(obj)
