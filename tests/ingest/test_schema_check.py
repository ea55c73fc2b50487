"""The I/O-free schema check of telemetry values, against the shipped ac22-3p family."""

from __future__ import annotations

import pytest

import parameters
from cloud.ingest.schema_check import TelemetryRules
from cloud.telemetry.store import Value


@pytest.fixture(scope="module")
def rules() -> TelemetryRules:
    return TelemetryRules(parameters.load_family("ac22-3p"))


def test_a_valid_sample_is_kept_whole(rules: TelemetryRules) -> None:
    values: dict[str, Value] = {"power_w": 7000.0, "energy_wh": 12.5, "frequency_hz": 50.0}
    assert rules.check("meter", values) == (values, [])


@pytest.mark.parametrize(
    ("node", "name", "value", "reason"),
    [
        ("meter", "no_such_param", 1.0, "unknown_parameter"),
        ("meter", "temperature_c", 20.0, "wrong_node"),
        ("master", "max_current_a", 16.0, "not_telemetry"),
        ("meter", "power_w", "7 kW", "wrong_type"),
        ("meter", "power_w", True, "wrong_type"),
        ("relay", "contactor_closed", 1.0, "wrong_type"),
        ("relay", "cp_state", 3.0, "wrong_type"),
        ("relay", "pp_current_a", 13.5, "wrong_type"),  # an int parameter
        ("meter", "frequency_hz", 70.0, "out_of_range"),
        ("meter", "power_w", -1.0, "out_of_range"),
        ("relay", "cp_state", "Z", "out_of_range"),
    ],
)
def test_each_kind_of_violation_is_flagged_and_the_rest_kept(
    rules: TelemetryRules, node: str, name: str, value: Value, reason: str
) -> None:
    good: dict[str, Value] = (
        {"energy_wh": 1.0} if node == "meter" else {"uptime_s": 5.0} if node == "master" else {}
    )
    kept, flags = rules.check(node, {**good, name: value})
    assert kept == good
    assert [(f.parameter, f.reason) for f in flags] == [(name, reason)]
    assert name in flags[0].detail


def test_integers_arrive_as_floats_and_pass_when_whole(rules: TelemetryRules) -> None:
    values: dict[str, Value] = {"pp_current_a": 32.0, "cp_state": "C", "contactor_closed": True}
    assert rules.check("relay", values) == (values, [])
