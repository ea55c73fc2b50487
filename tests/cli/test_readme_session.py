"""The README's first session, run as written, against the processes of `ampfleet up` (what
`make up` runs), so that the front door cannot drift from the code; then, on the same platform,
the commands of docs/try-a-device.md.

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

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TRY_A_DEVICE = ROOT / "docs" / "try-a-device.md"
SECTION = "A first session with curl"
API_HOST = "localhost:8080"
FIRMWARE = "1.0.0"  # what `ampfleet device connect` announces by default


def sh_blocks(text: str) -> list[str]:
    """The ```sh blocks of a Markdown text."""
    return [block.rstrip() for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)]


def readme_session() -> str:
    """The shell of the README's first session: every ```sh block of its section."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n#", start)  # the next heading ends the section
    blocks = sh_blocks(text[start:end])
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
    script: str  # the session as run (ports substituted)
    env: dict[str, str]
    broker_port: int


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
    port, broker_port = free_port(), free_port()
    env = {
        **os.environ,
        "AMPFLEET_API_PORT": str(port),
        "AMPFLEET_API_WORKERS": "1",
        "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{broker_port}",
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
        yield Session(
            api, token, done.stdout, done.stderr, device, latest, cwd, script, env, broker_port
        )
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


# --- docs/try-a-device.md, on the same platform, after the session ----------------------------


def _doc_block(blocks: list[str], marker: str) -> str:
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"one block of docs/try-a-device.md holding {marker!r}: {found}"
    return found[0]


def test_the_commands_of_try_a_device_work(session: Session) -> None:
    """Every command of the doc, in its order; what runs until Ctrl-C is bounded, what the doc
    runs "from another shell" runs while the first one waits."""
    blocks = [
        b.replace("-p 1884", f"-p {session.broker_port}")
        for b in sh_blocks(TRY_A_DEVICE.read_text())
    ]
    credentials = _doc_block(blocks, "DEVICE=$(field device_id")
    wrong = _doc_block(blocks, "# WRONG")
    connect = _doc_block(blocks, "ampfleet device connect")
    while_connected = _doc_block(blocks, "charging.start")
    options = _doc_block(blocks, "BROKER=")
    watch = _doc_block(blocks, "-i watch-$DEVICE")
    online = _doc_block(blocks, '"state":"online"')
    telemetry = _doc_block(blocks, "telemetry/latest")
    receive = _doc_block(blocks, "mosquitto_rr")
    command = _doc_block(blocks, "COMMAND=$(")
    answer = _doc_block(blocks, "cmd/result")
    offline = _doc_block(blocks, '"state":"offline","ts"')
    assert len(blocks) == 12, "a new block in docs/try-a-device.md: run it here too"
    assert "--interval 5" in connect and "mosquitto_sub" in watch
    # The doc continues the README's session in the same shell: its sign-in and helpers, up to
    # where it starts creating things.
    assert "\nORG=" in session.script
    preamble = session.script.split("\nORG=", 1)[0]
    connect = connect.replace("--interval 5", "--interval 1 --duration 12")
    watch = watch.replace("mosquitto_sub", "timeout 60 mosquitto_sub")
    script = f"""
{preamble}
{credentials}
{{ {wrong}
}} 2> wrong.err
sleep 2; kill $!; wait $! || true
{{ {connect}
}} > connect.out 2> connect.err &
connected=$!
until grep -q connected connect.err; do sleep 0.5; done
{{ {while_connected}
}} > while-connected.out
wait $connected
{options}
{{ {watch}
}} > watch.out &
watching=$!
sleep 1
{online}
{{ {telemetry}
}} > latest.out
{{ {receive}
}} > received.out &
receiving=$!
sleep 2
{command}
wait $receiving
{{ {answer}
}} > answered.out
{offline}
sleep 1; kill $watching || true
"""
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=session.cwd,
        env=session.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    device_id = session.device["id"]

    def read(name: str) -> str:
        return (session.cwd / name).read_text()

    # `ampfleet device connect` answered the command and the configuration change.
    connected = read("connect.out")
    assert f"<- af/{device_id}/cmd " in connected and '"name":"charging.start"' in connected
    assert '"name":"config.apply"' in connected
    assert connected.count('"status":"ok"') >= 2
    assert '"online":true' in read("while-connected.out")
    # The Mosquitto clients, one connection at a time: telemetry stored, a command answered.
    latest = json.loads(read("latest.out"))
    assert latest["values"]["power_w"]["value"] == 7100.0
    assert f"af/{device_id}/cmd " in read("received.out")
    assert '"state":"succeeded"' in read("answered.out")
    watched = read("watch.out")
    assert '"seq":5' in watched  # mosquitto_rr's own message
    final = call("GET", f"{session.api}/devices/{device_id}/status", token=session.admin_token)[1]
    assert final["online"] is False  # the doc ends offline, on purpose
