"""``ampfleet broker``: help on every command, the Mosquitto configuration it writes."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloud.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATA_DIR", "DATABASE_URL", "BROKER", "BROKER_ADMIN_PASSWORD"):
        monkeypatch.delenv(f"AMPFLEET_{name}", raising=False)
    monkeypatch.setenv("AMPFLEET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AMPFLEET_BROKER_SERVICE_PASSWORD", "service-pw-for-tests")
    return tmp_path


@pytest.mark.parametrize(
    "command", [["broker"], ["broker", "run"], ["broker", "resync"], ["broker", "mosquitto-config"]]
)
def test_every_broker_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_mosquitto_config_writes_the_files_once(env: Path) -> None:
    out = env / "mosquitto"
    result = CliRunner().invoke(main, ["broker", "mosquitto-config", str(out), "--tls-port", "0"])
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 1883 0.0.0.0" in conf
    assert "certfile" not in conf and "max_packet_size 17408" in conf
    dynsec_file = out / "dynamic-security.json"
    document = json.loads(dynsec_file.read_text())
    assert dynsec_file.stat().st_mode & 0o777 == 0o600
    assert [c["username"] for c in document["clients"]] == ["ampfleet-admin", "ampfleet-service"]
    admin_password = (env / "data" / "broker-admin-password").read_text().strip()
    assert len(admin_password) >= 32 and admin_password not in dynsec_file.read_text()
    assert (env / "data" / "broker-admin-password").stat().st_mode & 0o777 == 0o600

    dynsec_file.write_text('{"kept": true}')
    again = CliRunner().invoke(main, ["broker", "mosquitto-config", str(out)])
    assert again.exit_code == 0 and "kept" in again.output
    assert json.loads(dynsec_file.read_text()) == {"kept": True}  # Mosquitto owns it now
    assert "listener 8883 0.0.0.0" in (out / "mosquitto.conf").read_text()


def test_resync_with_the_embedded_broker_has_nothing_to_do(env: Path) -> None:
    result = CliRunner().invoke(main, ["broker", "resync"])
    assert result.exit_code == 0 and "nothing to resync" in result.output


def test_run_refuses_an_external_broker(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMPFLEET_BROKER", "external")
    result = CliRunner().invoke(main, ["broker", "run"])
    assert result.exit_code == 1 and "external" in result.output


def test_resync_reports_an_unreachable_broker(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud.db.migrate import upgrade
    from tests.services.amqtt_broker import free_port

    url = f"sqlite:///{env / 'records.db'}"
    upgrade(url)
    monkeypatch.setenv("AMPFLEET_DATABASE_URL", url)
    monkeypatch.setenv("AMPFLEET_BROKER", "external")
    monkeypatch.setenv("AMPFLEET_BROKER_URL", f"mqtt://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(main, ["broker", "resync"])
    assert result.exit_code == 1 and "mosquitto at 127.0.0.1" in result.output


def test_generated_broker_secrets_are_private_and_stable(tmp_path: Path) -> None:
    from cloud.devicelink.accounts import load_or_create_secret, service_password
    from cloud.settings import Settings

    settings = Settings.load({"data_dir": tmp_path / "data"})
    first = service_password(settings)
    path = tmp_path / "data" / "broker-service-password"
    assert len(first) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert service_password(settings) == first == load_or_create_secret(path)
    configured = Settings.load({"data_dir": tmp_path / "data", "broker_service_password": "set"})
    assert service_password(configured) == "set"


def _line(stream: Any, timeout: float = 10) -> str:
    """The next line of a child's output, failing after ``timeout`` seconds without one."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"nothing after {timeout}s"
    return str(stream.readline())


def test_crl_reload_signals_at_start_and_when_the_crl_changes(tmp_path: Path) -> None:
    # A stand-in for Mosquitto: counts SIGHUPs. The command runs as the sidecar does.
    broker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time\n"
            "signal.signal(signal.SIGHUP, lambda *_: print('hup', flush=True))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert broker.stdout is not None and _line(broker.stdout) == "ready\n"
    pid_file, crl_file = tmp_path / "mosquitto.pid", tmp_path / "crl.pem"
    pid_file.write_text(str(broker.pid))
    crl_file.write_text("first")
    reloader = subprocess.Popen(
        [
            *(sys.executable, "-m", "cloud.cli", "broker", "crl-reload"),
            *("--pid-file", str(pid_file), "--crl-file", str(crl_file), "--interval", "0.1"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        assert _line(broker.stdout) == "hup\n"  # at start: a change may have been missed
        replacement = tmp_path / "crl.new"
        replacement.write_text("second")
        replacement.replace(crl_file)  # as cloud.pki.crl writes it
        assert _line(broker.stdout) == "hup\n"
    finally:
        reloader.terminate()
        broker.kill()
        reloader.wait(10)
        broker.wait(10)
