"""The firmware's parameter engine (firmware/core/params.py) against the compiled schemas.

Where the cloud decides the same thing (which values a setting refuses, and why), the engine's
answer is compared with the cloud's own code over every family, so device and cloud cannot drift.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any

import pytest

import parameters
from cloud.configuration.schema_rules import refusals
from firmware.core import params

from .conftest import BUILD

FAMILIES = sorted(path.stem for path in BUILD.glob("*.json"))
CANDIDATES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    3,
    5,
    6,
    6.0,
    16,
    16.5,
    32,
    33,
    -1,
    -0.5,
    0.1,
    0.3,
    900,
    901,
    85500,
    86400,
    1e9,
    "",
    "A",
    "Z",
    "0.Unknown",
    "x" * 300,
    [],
    {},
]


def document() -> dict[str, Any]:
    return json.loads((BUILD / "ac22-3p.json").read_bytes())


@pytest.mark.parametrize("family_id", FAMILIES)
def test_every_shipped_family_loads(family_id: str) -> None:
    family = params.load_file(str(BUILD / f"{family_id}.json"))
    cloud = parameters.load_compiled(BUILD / f"{family_id}.json")
    assert family.schema == cloud.schema_tag
    assert [p.id for p in family.order] == [p.id for p in cloud.parameters]


@pytest.mark.parametrize("family_id", FAMILIES)
def test_refusals_match_the_cloud_word_for_word(family_id: str) -> None:
    family = params.load_file(str(BUILD / f"{family_id}.json"))
    cloud = parameters.load_compiled(BUILD / f"{family_id}.json")
    for parameter in cloud.parameters:
        for value in CANDIDATES:
            expected = refusals(cloud, {parameter.id: value}).get(parameter.id)
            assert family.write_refusal(parameter.id, value) == expected, (parameter.id, value)
    assert family.write_refusal("nope", 1) == refusals(cloud, {"nope": 1})["nope"]


def test_step_grid_is_exact_like_the_clouds_decimal_check() -> None:
    assert params.on_step(0.3, 0.1, None)
    assert params.on_step(1.25, 0.05, 0)
    assert not params.on_step(0.35, 0.1, 0)
    assert params.on_step(3, 2, 1) and not params.on_step(2, 2, 1)
    assert params.on_step(1e-07, 1e-07, None)
    assert not params.on_step(float("nan"), 1, 0)
    for value in (0.3, 0.35, 7.1, 1e-7):
        assert params.on_step(value, 0.1, 0) == parameters.schema.on_step(value, 0.1, 0)


def test_reject_unknown_compiled_layout() -> None:
    doc = document()
    doc["format"] = 2
    with pytest.raises(params.SchemaError, match="format"):
        params.load(json.dumps(doc))
    with pytest.raises(params.SchemaError):
        params.load(b"[]")
    with pytest.raises(params.SchemaError):
        params.load(b"{")


def test_poll_groups_merge_registers_into_few_block_reads(family: params.Family) -> None:
    groups = {(g.node, g.period_ms): g for g in family.groups}
    assert sorted(groups) == [
        ("master", 10000),
        ("master", 60000),
        ("meter", 10000),
        ("meter", 60000),
        ("relay", 1000),
        ("relay", 10000),
    ]
    meter = groups["meter", 10000]
    assert [(b.address, b.register, b.length) for b in meter.blocks] == [(0x20, 0, 24)]
    assert {p.id for p in meter.params} >= {"energy_wh", "power_w", "power_factor"}
    relay = groups["relay", 1000]  # contactor (0), cp_state (3), pp (4): one read over the hole
    assert [(b.register, b.length) for b in relay.blocks] == [(0, 5)]
    master = groups["master", 10000]
    assert master.blocks == () and {p.id for p in master.params} == {
        "session_energy_wh",
        "session_s",
    }


def test_blocks_split_on_wide_holes_and_the_size_limit() -> None:
    doc = document()
    base = next(p for p in doc["parameters"] if p["id"] == "energy_wh")
    extra = []
    for index, register in enumerate((40, 44, 100)):
        item = copy.deepcopy(base)
        item["id"] = f"extra_{index}_wh"
        item["binding"]["register"] = register
        extra.append(item)
    doc["parameters"] += extra
    family = params.load(json.dumps(doc))
    group = next(g for g in family.groups if g.node == "meter" and g.period_ms == 10000)
    assert [(b.register, b.length) for b in group.blocks] == [(0, 24), (40, 8), (100, 4)]
    wide = [
        params.Param({"id": f"w{i}", "node": "meter", "kind": "telemetry", "type": "float",
                      "binding": {"kind": "i2c", "address": 32, "register": i * 30, "width": 30}})
        for i in range(3)
    ]  # fmt: skip
    assert [(b.register, b.length) for b in params.plan_blocks(wide)] == [(0, 60), (60, 30)]


def param(**binding: Any) -> params.Param:
    kind = binding.pop("type", "float")
    extra = binding.pop("extra", {})
    return params.Param(
        {
            "id": "x",
            "node": "meter",
            "kind": "telemetry",
            "type": kind,
            "binding": {"kind": "i2c", "address": 32, "register": 0, **binding},
            **extra,
        }
    )


def test_register_conversions_cover_every_binding_option() -> None:
    signed = param(width=2, signed=True, scale=0.1)
    assert signed.encode(-12.5) == b"\xff\x83"
    assert signed.decode(b"\xff\x83") == -12.5
    little = param(width=4, byte_order="little", scale=0.01, offset=-40)
    assert little.decode(little.encode(21.37)) == 21.37
    assert little.encode(21.37) == (6137).to_bytes(4, "little")
    ieee = param(width=4, encoding="ieee754")
    assert ieee.encode(1.5) == struct.pack(">f", 1.5)
    assert ieee.decode(struct.pack(">f", 1.5)) == 1.5
    double = param(width=8, encoding="ieee754", byte_order="little")
    assert double.decode(struct.pack("<d", 230.25)) == 230.25
    assert param(width=4, type="int").decode(b"\x00\x00\x01\x00") == 256
    assert param(width=2, type="int", scale=0.5).decode(b"\x00\x03") == 2  # rounded: an int
    boolean = param(width=1, type="bool")
    assert boolean.decode(b"\x02") is True and boolean.encode(False) == b"\x00"
    enum = param(width=1, type="enum", extra={"values": ["A", "B", "C"]})
    assert enum.decode(b"\x02") == "C" and enum.encode("B") == b"\x01"
    assert enum.decode(b"\x07") is None
    text = param(width=8, type="string")
    assert text.encode("1.4.2") == b"1.4.2\x00\x00\x00"
    assert text.decode(b"1.4.2\x00\x00\x00") == "1.4.2"
    assert text.decode(b"\xff\xfe\x00\x00\x00\x00\x00\x00") is None
    assert param(width=2).decode(b"\x01") is None  # short block
    with pytest.raises(ValueError, match="fit"):
        param(width=1).encode(256)
    with pytest.raises(ValueError, match="fit"):
        param(width=1, signed=True).encode(-129)
    with pytest.raises(ValueError, match="longer"):
        text.encode("x" * 9)


def test_settings_apply_refuse_report_and_persist(family: params.Family) -> None:
    settings = params.Settings(family)
    assert settings.get("max_current_a") == 16
    refused, changed, reboot = settings.apply(
        {"max_current_a": 20, "phases": 2, "power_w": 5, "led_brightness_pct": 80}
    )
    assert refused == {
        "phases": "not a multiple of the step 2",
        "power_w": "a telemetry, not a setting",
    }
    assert changed == ["max_current_a"]  # 80 is already in force
    assert reboot is False
    assert settings.in_force()["max_current_a"] == 20
    settings.version = 4
    restored = params.Settings(family)
    restored.restore(settings.dump())
    assert restored.version == 4 and restored.in_force() == settings.in_force()
    # Back to the default: nothing is stored for it any more.
    settings.apply({"max_current_a": 16})
    assert settings.overrides == {}
    torn = params.Settings(family)
    torn.restore(b'{"version": 3, "val')
    assert torn.version == 0 and torn.in_force() == params.Settings(family).in_force()


def test_a_reboot_only_setting_says_so() -> None:
    doc = document()
    for item in doc["parameters"]:
        if item["id"] == "phases":
            item["reboot_required"] = True
    settings = params.Settings(params.load(json.dumps(doc)))
    assert settings.apply({"phases": 1}) == ({}, ["phases"], True)
    assert settings.apply({"max_current_a": 20}) == ({}, ["max_current_a"], False)


def test_restore_drops_values_a_stricter_schema_refuses(family: params.Family) -> None:
    settings = params.Settings(family)
    settings.restore(b'{"version": 2, "values": {"max_current_a": 40, "led_brightness_pct": 10}}')
    assert settings.get("max_current_a") == 16
    assert settings.get("led_brightness_pct") == 10


def test_commands_are_checked_against_their_arguments(family: params.Family) -> None:
    assert family.command_refusal("charging.start", {"connector": 1}) is None
    assert family.command_refusal("reboot", {}) is None
    assert family.command_refusal("fly", {}) == ("unknown_command", None)
    assert family.command_refusal("max_current_a", {}) == ("unknown_command", None)
    assert family.command_refusal("charging.start", {}) == ("bad_args", {"connector": "required"})
    assert family.command_refusal("charging.start", {"connector": 2, "speed": 1}) == (
        "bad_args",
        {"connector": "above the maximum 1", "speed": "unknown argument"},
    )


def test_sampler_schedules_groups_by_period(family: params.Family) -> None:
    sampler = params.Sampler(family, 0)
    assert len(sampler.due(0)) == len(family.groups)  # all at boot without jitter
    assert [g.period_ms for g in sampler.due(1000)] == [1000]
    assert {(g.node, g.period_ms) for g in sampler.due(10_000)} == {
        ("relay", 1000),
        ("relay", 10000),
        ("meter", 10000),
        ("master", 10000),
    }
    # A stall of a minute does not make the 1 s group fire sixty times.
    assert len([g for g in sampler.due(70_500) if g.period_ms == 1000]) == 1
    assert [g.period_ms for g in sampler.due(71_000)] == []
    assert [g.period_ms for g in sampler.due(71_500)] == [1000]
    jittered = params.Sampler(family, 0, rand=lambda: 0.5)
    assert jittered.due_ms == [g.period_ms // 2 for g in family.groups]


def store_relay(sampler: params.Sampler, family: params.Family, cp: str, closed: bool) -> list:
    group = next(g for g in family.groups if g.node == "relay" and g.period_ms == 1000)
    block = bytearray(5)
    block[0] = closed
    block[3] = "ABCDEF".index(cp)
    block[4] = 32
    sampler.store(group.blocks[0], bytes(block))
    return [group]


def test_status_values_go_out_on_change_and_on_the_heartbeat(family: params.Family) -> None:
    sampler = params.Sampler(family, 0)
    groups = store_relay(sampler, family, "A", False)
    assert sampler.collect(groups, 0, 60_000) == [
        ("relay", {"contactor_closed": False, "cp_state": "A", "pp_current_a": 32})
    ]
    groups = store_relay(sampler, family, "A", False)
    assert sampler.collect(groups, 1000, 60_000) == []  # nothing changed
    groups = store_relay(sampler, family, "B", False)
    assert sampler.collect(groups, 2000, 60_000) == [("relay", {"cp_state": "B"})]
    groups = store_relay(sampler, family, "B", False)
    assert sampler.collect(groups, 60_000, 60_000) == [
        ("relay", {"contactor_closed": False, "cp_state": "B", "pp_current_a": 32})
    ]


def test_sampler_drops_values_that_break_their_schema(family: params.Family) -> None:
    sampler = params.Sampler(family, 0)
    meter = next(g for g in family.groups if g.node == "meter" and g.period_ms == 10000)
    block = bytearray(24)
    block[4:8] = (-100).to_bytes(4, "big", signed=True)  # power_w -10 W: below its minimum 0
    block[14:16] = (2301).to_bytes(2, "big")
    sampler.store(meter.blocks[0], bytes(block))
    (node, values), *_ = sampler.collect([meter], 0)
    assert node == "meter" and "power_w" not in values and values["voltage_l1_v"] == 230.1
    assert sampler.flagged == 1
    sampler.forget("meter")
    assert sampler.collect([meter], 10_000) == []


def test_load_file_reads_a_path(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_bytes((BUILD / "ac22-3p.json").read_bytes())
    assert params.load_file(str(target)).id == "ac22-3p"
