"""The shipped families pass, use the fleet's telemetry ids and fit an ESP32-C3."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

import parameters
from cloud.identity.permissions import SYSTEM_ROLES
from firmware.core import contract
from parameters.bindings import DEFAULT_BINDINGS
from parameters.compiler import build, check_paths, meta_schema

FAMILIES = ("ac22-3p", "ocpp-generic", "wallbox-7kw")


def test_shipped_families_pass() -> None:
    result = check_paths([parameters.FAMILIES_DIR], previous=parameters.BUILD_DIR)
    assert [str(issue) for issue in result.issues] == []
    assert tuple(f.id for f in result.families) == FAMILIES


def test_meta_schema_is_valid_2020_12() -> None:
    schema = meta_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    for kind in DEFAULT_BINDINGS:
        jsonschema.Draft202012Validator.check_schema(kind.full_schema())


@pytest.mark.parametrize(
    "text",
    ["power_w", "energy.import_wh", "a", "x" * 64, "Power", "1a", "a-b", "x" * 65, "é", ""],
)
def test_meta_schema_ids_follow_the_contract(text: str) -> None:
    pattern = meta_schema()["$defs"]["parameterId"]["pattern"]
    assert bool(re.search(pattern, text)) == contract.is_parameter_id(text)
    node_pattern = meta_schema()["$defs"]["nodeId"]["pattern"]
    assert bool(re.search(node_pattern, text[:32])) == contract.is_node_id(text[:32])


def test_dashboard_ids_are_declared() -> None:
    ac = parameters.load_family("ac22-3p")
    wallbox = parameters.load_family("wallbox-7kw")
    ocpp = parameters.load_family("ocpp-generic")
    for family in (ac, wallbox, ocpp):
        for pid in ("power_w", "energy_wh", "temperature_c", "session_s"):
            family.parameter(pid)
    for pid in ("current_a", "voltage_v"):
        wallbox.parameter(pid)
    for pid in ("current_l1_a", "current_l2_a", "current_l3_a", "voltage_l1_v"):
        ac.parameter(pid)
        ocpp.parameter(pid)


def test_ac22_declares_what_the_card_asks() -> None:
    family = parameters.load_family("ac22-3p")
    assert {(n.id, n.i2c_address) for n in family.nodes} == {
        ("master", None),
        ("meter", 0x20),
        ("relay", 0x21),
    }
    max_current = family.parameter("max_current_a").value
    assert max_current is not None
    assert (max_current.minimum, max_current.maximum, max_current.step) == (6, 32, 1)
    phases = family.parameter("phases").value
    assert phases is not None
    assert [v for v in range(0, 5) if phases.reason_to_refuse(v) is None] == [1, 3]
    cp_state = family.parameter("cp_state").value
    assert cp_state is not None and cp_state.values == ("A", "B", "C", "D", "E", "F")
    kinds = {p.id: p.kind for p in family.parameters}
    assert kinds["reboot"] == kinds["charging.start"] == kinds["connector.unlock"] == "command"
    assert kinds["firmware_version"] == kinds["uptime_s"] == kinds["wifi_rssi_dbm"] == "status"


def test_ocpp_profile_maps_measurands_and_keys() -> None:
    family = parameters.load_family("ocpp-generic")
    energy = family.parameter("energy_wh").binding
    assert energy.get("measurand") == "Energy.Active.Import.Register"
    assert family.parameter("current_l2_a").binding.get("phase") == "L2"
    heartbeat = family.parameter("heartbeat_period_s").binding
    assert heartbeat.get("key") == "HeartbeatInterval"
    assert (heartbeat.get("component"), heartbeat.get("variable")) == (
        "OCPPCommCtrlr",
        "HeartbeatInterval",
    )


def test_roles_exist_and_rights_follow_the_kind() -> None:
    for family_id in FAMILIES:
        for parameter in parameters.load_family(family_id).parameters:
            assert set(parameter.read) | set(parameter.write) <= set(SYSTEM_ROLES)
            if parameter.kind in ("telemetry", "status"):
                assert not parameter.write


def test_compiled_files_are_small(tmp_path: Path) -> None:
    # Kept well below the contract's 16 KiB MQTT payload, so the file could travel on the
    # config channel too, and small beside the ESP32-C3's 400 KiB of SRAM once parsed.
    for built in build([parameters.FAMILIES_DIR], tmp_path):
        assert built.size < 12_000, (built.family, built.size)
        json.loads(built.path.read_bytes())


def test_committed_build_matches_the_sources(tmp_path: Path) -> None:
    if not parameters.BUILD_DIR.is_dir():
        pytest.skip("no build in the checkout")
    for built in build([parameters.FAMILIES_DIR], tmp_path):
        committed = parameters.BUILD_DIR / built.path.name
        assert committed.read_bytes() == built.path.read_bytes(), "run: ampfleet parameters build"
