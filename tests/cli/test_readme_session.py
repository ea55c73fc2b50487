"""The README's first session, run as written, against the processes of `ampfleet up` (what
`make up` runs), so that the front door cannot drift from the code.

The ```sh block(s) of the section "A first session with curl" are taken from README.md and run
by bash in a fresh directory where `ampfleet up` runs on free ports; only the API's
``localhost:8080`` is replaced by the port of this run (the broker's URL comes back from the API
in the device's credentials). ``.venv`` is a link to the running virtual environment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_up import AMPFLEET, call, free_port, wait_until_up

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "A first session with curl"
API_HOST = "localhost:8080"
FIRMWARE = "1.0.0"  # what `ampfleet device connect` announces by default


def readme_session() -> str:
    """The shell of the README's first session: every ```sh block of its section."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n#", start)  # the next heading ends the section
    blocks = re.findall(r"^```sh\n(.*?)^```", text[start:end], re.M | re.S)
    assert blocks, f"no ```sh block under {SECTION!r} in README.md"
    return "\n".join(blocks)


@dataclass
class Session:
    """What one run of the README's session left: its output and the platform to question."""

    api: str
    admin_token: str
    stdout: str
    stderr: str
    device: dict[str, Any]
    latest: dict[str, Any]
    cwd: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person at the terminal stops `make up`."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_telemetry(api: str, token: str, device_id: str, timeout: float = 120) -> None:
    """Wait until the ingest worker stores samples (the simulated charger's): from then on the
    platform is as a person finds it a minute after `make up`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body, _ = call(
                "GET", f"{api}/devices/{device_id}/telemetry/latest?node=meter", token=token
            )
        except (urllib.error.URLError, ConnectionError):
            status, body = 0, None
        if status == 200 and body and body.get("values"):
            return
        time.sleep(1)
    raise AssertionError(f"no telemetry from {device_id} within {timeout} s")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    """`ampfleet up` in a fresh directory, and the README's session run against it once."""
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / ".venv").symlink_to(Path(AMPFLEET).parent.parent)
    port = free_port()
    env = {
        **os.environ,
        "AMPFLEET_API_PORT": str(port),
        "AMPFLEET_API_WORKERS": "1",
        "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{free_port()}",
        "AMPFLEET_METRICS_PORT": str(free_port()),
        "AMPFLEET_OCPP_PORT": str(free_port()),
        # One simulated charger: its organization exists, as on every `make up`.
        "AMPFLEET_SIMULATED_CHARGERS": "1",
    }
    for name in ("AMPFLEET_DATA_DIR", "AMPFLEET_DATABASE_URL", "AMPFLEET_ADMIN_PASSWORD"):
        env.pop(name, None)  # the defaults, as from a fresh clone
    log = (cwd / "up.log").open("wb")
    process = subprocess.Popen(
        [AMPFLEET, "up"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process)
        password = (cwd / ".ampfleet" / "initial-admin-password").read_text().strip()
        form = {"grant_type": "password", "username": "admin@ampfleet.local", "password": password}
        token = call("POST", f"{api}/auth/token", form=form)[1]["access_token"]
        _wait_for_telemetry(api, token, "sim-00001")

        script = readme_session()
        assert API_HOST in script
        script = script.replace(API_HOST, f"localhost:{port}")
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        # The session ends with two reads: the device, then its latest meter reading.
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        try:
            device, latest = json.loads(lines[-2]), json.loads(lines[-1])
        except (IndexError, ValueError) as exc:
            raise AssertionError(f"not two JSON answers at the end of:\n{done.stdout}") from exc
        yield Session(api, token, done.stdout, done.stderr, device, latest, cwd)
    finally:
        _stop(process)
        log.close()


def test_the_charger_is_registered_in_the_organization_the_session_created(
    session: Session,
) -> None:
    organizations = call("GET", f"{session.api}/organizations", token=session.admin_token)[1]
    by_slug = {o["slug"]: o["id"] for o in organizations}
    assert "simulated" in by_slug  # the organization the old README put the charger in
    assert session.device["organization_id"] == by_slug["acme"]
    assert session.device["serial"] == "AC22-000001"
    assert session.device["hardware_family"] == "ac22-3p"


def test_the_credentials_were_kept_private_and_the_charger_connected(session: Session) -> None:
    saved = session.cwd / "device-credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    credentials = json.loads(saved.read_text())
    device_id = session.device["id"]
    assert credentials["username"] == device_id and credentials["password"]
    # `ampfleet device connect` announced itself online with its firmware, then offline.
    status_lines = [
        line for line in session.stdout.splitlines() if line.startswith(f"-> af/{device_id}/status")
    ]
    assert '"state":"online"' in status_lines[0] and f'"fw":"{FIRMWARE}"' in status_lines[0]
    assert '"state":"offline"' in status_lines[-1]
    status = call("GET", f"{session.api}/devices/{device_id}/status", token=session.admin_token)[1]
    assert status["reported_firmware"] == FIRMWARE
    assert status["schema_current"] is True


def test_the_latest_telemetry_is_the_chargers_meter(session: Session) -> None:
    values = session.latest["values"]
    assert 200 < values["voltage_l1_v"]["value"] < 260
    assert values["power_w"]["value"] > 0
    assert values["energy_wh"]["value"] > 0


# --- waits on the registry work of issue 13 (the status worker moves a device to `active` on its
# first connect and stores the firmware version it announced); fails until that is merged.
def test_the_connected_charger_reads_active_with_its_firmware(session: Session) -> None:
    assert session.device["state"] == "active"
    assert session.device["firmware_version"] == FIRMWARE
