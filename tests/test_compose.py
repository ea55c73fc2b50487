"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked: the
services the device-link issue asks for, settings that exist, commands that exist, and the
Grafana provisioning the stack mounts."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from cloud.cli import main
from cloud.ingest import metrics
from cloud.settings import DECLARED
from parameters import FAMILIES_DIR, load_family

ROOT = Path(__file__).parent.parent


def compose() -> dict[str, dict[str, dict[str, object]]]:
    loaded: dict[str, dict[str, dict[str, object]]] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text()
    )
    return loaded


def test_the_stack_runs_every_component_with_declared_settings_and_real_commands() -> None:
    services = compose()["services"]
    wanted = {
        "mosquitto",
        "influxdb",
        "mysql",
        "grafana",
        "prometheus",
        "api",
        "ingest-1",
        "ingest-2",
        "status",
        "provisioner",
        "migrate",
    }
    assert wanted <= set(services)
    declared = {s.env for s in DECLARED}
    for name, service in services.items():
        environment = service.get("environment") or {}
        ours = {k for k in environment if k.startswith("AMPFLEET_")}  # type: ignore[union-attr]
        if service.get("image") == "ampfleet:latest":
            assert ours <= declared, (name, ours - declared)
        command = service.get("command")
        if isinstance(command, list) and command[:1] == ["ampfleet"]:
            help_run = CliRunner().invoke(main, [*command[1:], "--help"])
            assert help_run.exit_code == 0, (name, help_run.output)
    assert services["api"]["command"] == ["ampfleet", "api"]


def test_grafana_provisions_both_datasources_and_dashboards_use_real_metrics() -> None:
    datasources = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/ampfleet.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    assert uids == {"ampfleet-influxdb", "ampfleet-prometheus"}
    names = {m._name for m in vars(metrics).values() if hasattr(m, "_name")}
    names |= {"ampfleet_devices", "ampfleet_devices_online"}
    boards = {
        p.stem: json.loads(p.read_text()) for p in (ROOT / "grafana/dashboards").glob("*.json")
    }
    assert {"fleet-overview", "charger-detail"} <= set(boards)
    for board in boards.values():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in uids
            for target in panel["targets"]:
                expr = target.get("expr", "")
                if expr:
                    used = set(re.findall(r"ampfleet_[a-z_]+", expr))
                    for metric in used:
                        base = metric.removesuffix("_bucket").removesuffix("_total")
                        assert base in names or metric in names, metric


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_dashboards", ROOT / "scripts" / "make_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_family_has_a_generated_dashboard_with_one_panel_per_telemetry_parameter() -> None:
    generator = _generator()
    for source in sorted(FAMILIES_DIR.glob("*.yaml")):
        family = load_family(source.stem)
        committed = json.loads(
            (ROOT / "grafana/dashboards" / f"family-{family.id}.json").read_text()
        )
        assert committed == generator.family_dashboard(family), (
            f"{family.id}: dashboard out of date; run scripts/make_dashboards.py"
        )
        telemetry = [p for p in family.parameters if p.kind == "telemetry"]
        assert len(committed["panels"]) == len(telemetry)
        for parameter, panel in zip(telemetry, committed["panels"], strict=True):
            assert parameter.id in panel["targets"][0]["query"]
            assert parameter.value is not None
            wanted = generator.GRAFANA_UNITS.get(parameter.value.unit or "", "none")
            assert panel["fieldConfig"]["defaults"]["unit"] == wanted
