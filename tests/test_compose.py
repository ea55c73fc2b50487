"""docker-compose.yml cannot be run here (no Docker engine); check what can be checked: the
services the device-link issue asks for, settings that exist, commands that exist, and the
Grafana provisioning the stack mounts."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.metrics import MetricWrapperBase

from cloud.cli import main
from cloud.devices import hardware, status
from cloud.ingest import metrics
from cloud.manufacturing import enrollment
from cloud.pairing import service as pairing_service
from cloud.pki import service as pki_service
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
        "config",
        "charging",
        "ocpp-1",
        "mosquitto-config",
        "prometheus-init",
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
    # The metrics of the factory line, the PKI, quarantine and pairing, as registered.
    for module in (enrollment, pki_service, pairing_service, status, hardware):
        names |= {m._name for m in vars(module).values() if isinstance(m, MetricWrapperBase)}
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


# Issue 13, item 6: the rules a compose file that really runs must keep. The stack test
# (tests/stack/test_compose_stack.py) runs it; these say why when a rule is broken.


def long_running() -> dict[str, dict[str, Any]]:
    """Services that keep running (one-shots say `restart: "no"`)."""
    return {n: s for n, s in compose()["services"].items() if s.get("restart") != "no"}


def metrics_services() -> set[str]:
    """Services that serve a worker's /metrics: every `ampfleet worker ...`."""
    return {
        name
        for name, service in compose()["services"].items()
        if service.get("command", [])[:2] == ["ampfleet", "worker"]
    }


def test_every_long_running_service_has_a_healthcheck() -> None:
    missing = [n for n, s in long_running().items() if not (s.get("healthcheck") or {}).get("test")]
    assert not missing


def test_every_platform_service_waits_for_the_migration_to_complete() -> None:
    services = compose()["services"]
    for name, service in long_running().items():
        if service.get("image") != "ampfleet:latest":
            continue
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), name
        assert depends.get("migrate") == {"condition": "service_completed_successfully"}, name
        for dependency, condition in depends.items():
            if services[dependency].get("restart") == "no":
                assert condition == {"condition": "service_completed_successfully"}, name
            else:  # a long-running dependency is waited for until its healthcheck passes
                assert condition == {"condition": "service_healthy"}, (name, dependency)


def test_mosquitto_serves_tls_on_every_listener_from_a_certificate_made_on_first_start() -> None:
    services = compose()["services"]
    init = " ".join(services["mosquitto-config"]["command"])
    # No plain listener: 8883 (passwords, the cloud's services) and 8884 (devices' mutual TLS).
    assert "--port 0 --tls-port 8883 --mtls-port 8884" in init
    assert init.index("ampfleet broker tls-files /mosquitto/certs") < init.index(
        "ampfleet broker mosquitto-config"
    )
    assert "--certfile /mosquitto/certs/server.pem" in init
    assert "--keyfile /mosquitto/certs/server.key" in init
    mosquitto = services["mosquitto"]
    assert mosquitto["ports"] == ["8884:8884"]  # devices: their certificates only
    assert "mosquitto-certs:/mosquitto/certs" in mosquitto["volumes"]
    assert "-p 8883 --cafile /mosquitto/certs/ca.pem" in mosquitto["healthcheck"]["test"][1]
    assert mosquitto["depends_on"] == {
        "mosquitto-config": {"condition": "service_completed_successfully"},
        "pki-init": {"condition": "service_completed_successfully"},
    }
    # The cloud's services reach it over TLS too, trusting the broker's CA.
    environment = compose()["x-ampfleet"]["environment"]
    assert environment["AMPFLEET_BROKER_URL"] == "mqtts://mosquitto:8883"
    ca = environment["AMPFLEET_BROKER_TLS_CA_FILE"]
    assert f"install -m 0644 /mosquitto/certs/ca.pem {ca}" in init
    # Device passwords stay off (the production default): nothing turns them on.
    for name, service in services.items():
        assert "AMPFLEET_BROKER_DEVICE_PASSWORDS" not in (service.get("environment") or {}), name


def test_mosquitto_reads_the_pki_files_from_their_own_volume_after_pki_init() -> None:
    document = compose()
    services = document["services"]
    environment = document["x-ampfleet"]["environment"]
    ca_file, crl_file = environment["AMPFLEET_PKI_CA_FILE"], environment["AMPFLEET_PKI_CRL_FILE"]
    directory = str(Path(ca_file).parent)
    assert str(Path(crl_file).parent) == directory
    # Not under the data volume, which Mosquitto's user cannot read.
    data = [v for v in document["x-ampfleet"]["volumes"] if v.startswith("ampfleet-data:")]
    assert not Path(directory).is_relative_to(data[0].split(":")[1])
    assert f"ampfleet-pki:{directory}" in document["x-ampfleet"]["volumes"]  # cloud: writes
    # Mosquitto reads it, read-only and outside /mosquitto (its entrypoint chowns that).
    assert f"ampfleet-pki:{directory}:ro" in services["mosquitto"]["volumes"]
    assert not directory.startswith("/mosquitto")
    init = " ".join(services["mosquitto-config"]["command"])
    assert f"--client-ca-file {ca_file}" in init and f"--crl-file {crl_file}" in init
    # The root one-shot hands the volume to the image's user, who writes the files.
    assert services["mosquitto-config"]["user"] == "root"
    assert f"chown ampfleet:ampfleet {directory} && chmod 0755 {directory}" in init
    pki_init = services["pki-init"]
    assert pki_init["command"] == ["ampfleet", "pki", "init"]
    assert "user" not in pki_init  # the image's ampfleet user
    assert pki_init["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "mosquitto-config": {"condition": "service_completed_successfully"},
    }


def test_the_crl_reload_sidecar_can_signal_mosquitto() -> None:
    services = compose()["services"]
    reload = services["crl-reload"]
    init = " ".join(services["mosquitto-config"]["command"])
    pid_file = reload["command"][reload["command"].index("--pid-file") + 1]
    crl_file = reload["command"][reload["command"].index("--crl-file") + 1]
    assert reload["command"][:3] == ["ampfleet", "broker", "crl-reload"]
    assert f"--pid-file {pid_file}" in init  # where Mosquitto writes it
    assert crl_file == compose()["x-ampfleet"]["environment"]["AMPFLEET_PKI_CRL_FILE"]
    # Mosquitto's PID namespace (the pid in the file is valid there) and its uid (may signal).
    assert reload["pid"] == "service:mosquitto"
    assert reload["user"] == "1883:1883"
    run_volume = f"{Path(pid_file).parent}"
    assert f"mosquitto-run:{run_volume}" in services["mosquitto"]["volumes"]
    assert sorted(reload["volumes"]) == sorted(
        [f"mosquitto-run:{run_volume}:ro", f"ampfleet-pki:{Path(crl_file).parent}:ro"]
    )
    assert reload["environment"] == {}  # no secret, no database
    assert reload["depends_on"]["mosquitto"] == {"condition": "service_healthy"}
    assert pid_file in reload["healthcheck"]["test"][-1]


def test_the_ocpp_bridge_listens_on_every_interface_of_its_container() -> None:
    bridge = compose()["services"]["ocpp-1"]
    environment = bridge["environment"]
    assert environment["AMPFLEET_OCPP_HOST"] == "0.0.0.0"  # noqa: S104
    port = environment["AMPFLEET_OCPP_PORT"]
    assert bridge["ports"] == [f"{port}:{port}"]


def test_prometheus_scrapes_every_service_with_metrics_and_the_api() -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "grafana/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for c in jobs["ampfleet-workers"]["static_configs"] for t in c["targets"]]
    hosts = {t.split(":")[0] for t in targets}
    assert hosts == metrics_services()
    assert len(targets) == len(hosts)
    for target in targets:
        host, port = target.split(":")
        assert services[host]["environment"]["AMPFLEET_METRICS_PORT"] == port, target
    api_port = services["api"]["environment"]["AMPFLEET_API_PORT"]
    api = jobs["ampfleet-api"]
    assert api["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert api["oauth2"]["token_url"] == f"http://api:{api_port}/api/v1/auth/token"
    # prometheus-init writes the client's secret and the configuration where Prometheus reads
    init, prometheus = services["prometheus-init"], services["prometheus"]
    out = init["command"][init["command"].index("--out") + 1]
    assert api["oauth2"]["client_secret_file"] == f"{out}/ampfleet-client-secret"
    assert f"--config.file={out}/prometheus.yml" in prometheus["command"]
    assert f"prometheus-config:{out}" in init["volumes"]
    assert f"prometheus-config:{out}:ro" in prometheus["volumes"]


def test_the_prometheus_configuration_is_valid_for_prometheus(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/services.sh installs prometheus)")
    secret = tmp_path / "ampfleet-client-secret"
    secret.write_text("secret\n")
    text = (ROOT / "grafana/prometheus/prometheus.yml").read_text()
    text = text.replace("@AMPFLEET_CLIENT_ID@", "afc_test")
    text = text.replace("/etc/prometheus/ampfleet/ampfleet-client-secret", str(secret))
    (tmp_path / "prometheus.yml").write_text(text)
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_secrets_come_from_the_env_file_and_fail_clearly_when_missing() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    required = set(re.findall(r"\$\{(\w+):\?set \1 in \.env\}", text))
    secret_like = {
        v for v in re.findall(r"\$\{(\w+)", text) if re.search("PASSWORD|TOKEN|SECRET", v)
    }
    assert secret_like <= required, secret_like - required
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert listed == required


def test_a_missing_secret_stops_the_stack_naming_it() -> None:
    # tests/stack/compose.py interpolates as docker compose does (its stack test relies on it).
    from tests.stack.compose import ComposeError, ComposeFile, required_variables

    wanted = required_variables((ROOT / "docker-compose.yml").read_text())
    env = dict.fromkeys(wanted, "x" * 16)
    assert ComposeFile(env).services["mysql"]["environment"]["MARIADB_PASSWORD"] == "x" * 16
    for name in wanted:
        with pytest.raises(ComposeError, match=f"{name} is missing a value: set {name} in .env"):
            ComposeFile({**env, name: ""})


def test_everything_the_stack_mounts_or_copies_exists() -> None:
    document = compose()
    named = set(document.get("volumes") or {})
    for name, service in document["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in named, (name, source)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
