"""End to end over real HTTP: `ampfleet up` on a fresh data directory, as the README says,
and `ampfleet api` serving HTTPS with a certificate."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.core import contract

AMPFLEET = str(Path(sys.executable).parent / "ampfleet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, Any]:
    headers = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, response.headers
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None, exc.headers


def wait_until_up(
    url: str, process: subprocess.Popen[bytes], context: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited early with {process.returncode}")
        try:
            if call("GET", url, context=context)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, ssl.SSLError):
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    port, broker_port = free_port(), free_port()
    env = {
        **os.environ,
        "AMPFLEET_API_PORT": str(port),
        "AMPFLEET_API_WORKERS": "1",
        "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{broker_port}",
        "AMPFLEET_METRICS_PORT": str(free_port()),
        "AMPFLEET_OCPP_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [AMPFLEET, "up"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", process)
        yield base, tmp_path, broker_port
    finally:
        stop(process)
    assert process.returncode == 0, process.stdout.read().decode() if process.stdout else ""


def test_up_serves_the_api_and_the_readme_story_holds(
    platform: tuple[str, Path, int],
) -> None:
    base, cwd, broker_port = platform
    password = (cwd / ".ampfleet" / "initial-admin-password").read_text().strip()
    api = f"{base}/api/v1"
    status, spec, _ = call("GET", f"{api}/openapi.json")
    assert status == 200 and "/api/v1/devices" in spec["paths"]

    status, tokens, _ = call(
        "POST",
        f"{api}/auth/token",
        form={"grant_type": "password", "username": "admin@ampfleet.local", "password": password},
    )
    assert status == 200
    admin = tokens["access_token"]
    status, org, _ = call("POST", f"{api}/organizations", {"slug": "acme", "name": "Acme"}, admin)
    assert status == 201
    status, roles, _ = call("GET", f"{api}/roles?name=operator", token=admin)
    status, _, _ = call(
        "POST",
        f"{api}/users",
        {
            "email": "op@acme.test",
            "password": "operator-password",
            "organization_id": org["id"],
            "roles": [{"role_id": roles[0]["id"]}],
        },
        admin,
    )
    assert status == 201
    status, device, _ = call(
        "POST",
        f"{api}/devices",
        {"serial": "ACME-0001", "hardware_family": "ac22-3p", "organization_id": org["id"]},
        admin,
    )
    assert status == 201

    status, op_tokens, _ = call(
        "POST",
        f"{api}/auth/token",
        form={
            "grant_type": "password",
            "username": "op@acme.test",
            "password": "operator-password",
        },
    )
    operator = op_tokens["access_token"]
    device_url = f"{api}/devices/{device['id']}"
    status, _, headers = call("GET", device_url, token=operator)
    assert status == 200
    status, body, _ = call(
        "DELETE", device_url, token=operator, headers={"If-Match": headers["ETag"]}
    )
    assert status == 403 and body["code"] == 403

    # The device link of the embedded platform: credentials, the broker, the ingest worker.
    status, issued, _ = call("POST", f"{device_url}/credentials", token=admin)
    assert status == 201
    mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=issued["username"])
    mqtt.username_pw_set(issued["username"], issued["password"])
    mqtt.connect("127.0.0.1", broker_port)
    mqtt.loop_start()
    # A reading of the ac22-3p's meter; the worker checks it against the family's schema.
    now_ms = int(time.time() * 1000)
    reading = {"power_w": 7200.0, "frequency_hz": 99.0}  # 99 Hz: out of range, flagged
    sample = contract.encode_telemetry(now_ms, 1, reading, node="meter")
    topic = contract.topic(issued["username"], contract.TELEMETRY)
    mqtt.publish(topic, sample, qos=1).wait_for_publish(10)
    mqtt.disconnect()
    mqtt.loop_stop()
    deadline = time.monotonic() + 30
    values: dict[str, Any] = {}
    while time.monotonic() < deadline and "power_w" not in values:
        time.sleep(0.3)
        values = call("GET", f"{device_url}/telemetry/latest?node=meter", token=admin)[1]["values"]
    assert values["power_w"]["value"] == 7200.0
    assert "frequency_hz" not in values

    # The simulated chargers `up` runs (AMPFLEET_SIMULATED_CHARGERS, default 3) report too:
    # the real firmware core, through the broker, the ingest worker and the schema check.
    simulated = f"{api}/devices/sim-00003"
    deadline = time.monotonic() + 60
    values = {}
    while time.monotonic() < deadline and "energy_wh" not in values:
        time.sleep(0.5)
        values = call("GET", f"{simulated}/telemetry/latest?node=meter", token=admin)[1]["values"]
    assert values["voltage_l1_v"]["value"] > 200
    status, device_status, _ = call("GET", f"{simulated}/status", token=admin)
    assert status == 200 and device_status["online"] is True
    assert device_status["schema_current"] is True


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_api_serves_https_when_given_a_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "AMPFLEET_API_PORT": str(port),
        "AMPFLEET_API_WORKERS": "1",
        "AMPFLEET_TLS_CERT_FILE": str(cert),
        "AMPFLEET_TLS_KEY_FILE": str(key),
        "AMPFLEET_DATA_DIR": str(tmp_path / "data"),
    }
    subprocess.run([AMPFLEET, "db", "upgrade"], env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        [AMPFLEET, "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    context = ssl.create_default_context(cafile=str(cert))
    try:
        wait_until_up(f"https://127.0.0.1:{port}/healthz", process, context)
        status, discovery, _ = call(
            "GET", f"https://127.0.0.1:{port}/.well-known/openid-configuration", context=context
        )
        assert status == 200
        assert discovery["token_endpoint"] == f"https://127.0.0.1:{port}/api/v1/auth/token"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            call("GET", f"http://127.0.0.1:{port}/healthz")  # no plain HTTP on that listener
    finally:
        stop(process)


# -- supervision: Ctrl-C, kill -9, a port in use ---------------------------------------------------
# One `ampfleet up` serves the tests below, in file order: it is used, each kind of child is
# killed in turn, and it is stopped with Ctrl-C as a person would, its whole output kept.

CHILD_KINDS = ("broker", "api", "ingest", "status", "config", "charging", "ocpp", "simulate")
NOISE = ("Traceback", "TRYING WRITE TO CLOSED SOCKET", "Failed to initialize client session")


class Platform:
    """A running `ampfleet up` in its own session, as in a terminal, its output in a file."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.env = {
            **os.environ,
            "AMPFLEET_API_PORT": str(self.port),
            "AMPFLEET_API_WORKERS": "1",
            "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{free_port()}",
            "AMPFLEET_METRICS_PORT": str(free_port()),
            "AMPFLEET_OCPP_PORT": str(free_port()),
        }
        self.log = cwd / "up.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [AMPFLEET, "up"],
                cwd=cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.base = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.base}/api/v1"
        self._token = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self) -> int:
        """What the terminal does on Ctrl-C: SIGINT to the foreground process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.process.wait(timeout=90)

    def token(self) -> str:
        if not self._token:
            password = (self.cwd / ".ampfleet" / "initial-admin-password").read_text().strip()
            form = {"grant_type": "password", "username": "admin@ampfleet.local"}
            status, tokens, _ = call(
                "POST", f"{self.api}/auth/token", form={**form, "password": password}
            )
            assert status == 200, tokens
            self._token = tokens["access_token"]
        return self._token

    def children(self) -> dict[str, int]:
        """The kind of each child of `up` (from its command line) and its pid."""
        found: dict[str, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != self.process.pid:
                continue
            words = [a.decode() for a in argv if a]
            kind = words[words.index("cloud.cli") + 1] if "cloud.cli" in words else "?"
            if kind in ("worker", "broker"):
                kind = words[words.index("cloud.cli") + 2] if kind == "worker" else "broker"
            found[kind] = int(entry.name)
        return found

    def latest_meter(self, device: str) -> dict[str, Any]:
        status, body, _ = call(
            "GET", f"{self.api}/devices/{device}/telemetry/latest?node=meter", token=self.token()
        )
        return body["values"] if status == 200 else {}


def _healthy(platform: Platform) -> bool:
    try:
        return call("GET", f"{platform.base}/healthz")[0] == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _newest_sample(values: dict[str, Any]) -> dt.datetime | None:
    stamps = [dt.datetime.fromisoformat(v["ts"]) for v in values.values() if v.get("ts")]
    return max(stamps) if stamps else None


def _wait(what: str, condition: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("up"))
    try:
        _wait("the API", lambda: platform.process.poll() is not None or _healthy(platform))
        assert platform.process.poll() is None, platform.output()
        yield platform
    finally:
        if platform.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                platform.ctrl_c()
        if platform.process.poll() is None:
            os.killpg(platform.process.pid, signal.SIGKILL)


def test_up_serves_its_simulated_chargers(supervised: Platform) -> None:
    """Used as a person would for a minute: a token, the devices, a charger's telemetry."""
    started = time.monotonic()
    token = supervised.token()
    status, devices, _ = call("GET", f"{supervised.api}/devices", token=token)
    assert status == 200
    assert {"sim-00001", "sim-00002", "sim-00003"} <= {d["id"] for d in devices}
    _wait("telemetry of sim-00001", lambda: "energy_wh" in supervised.latest_meter("sim-00001"))
    while time.monotonic() - started < 60:
        assert call("GET", f"{supervised.api}/devices", token=token)[0] == 200
        assert supervised.latest_meter("sim-00001")["voltage_l1_v"]["value"] > 200
        time.sleep(2)


@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_up_restarts_a_child_killed_with_sigkill(supervised: Platform, kind: str) -> None:
    """kill -9 of one child: it comes back, the others keep their pids (and serve)."""
    before = supervised.children()
    assert set(before) == set(CHILD_KINDS), before
    killed_at = dt.datetime.now(dt.UTC)
    os.kill(before[kind], signal.SIGKILL)

    def back() -> bool:
        if kind != "api":
            assert _healthy(supervised), f"the API stopped answering after {kind} was killed"
        now = supervised.children()
        return kind in now and now[kind] != before[kind]

    _wait(f"{kind} to come back", back)
    after = supervised.children()
    assert {k: p for k, p in after.items() if k != kind} == {
        k: p for k, p in before.items() if k != kind
    }
    _wait("the API", lambda: _healthy(supervised))
    if kind in ("broker", "ingest", "simulate"):
        # The devices reconnect (to the new broker) and their telemetry flows again.
        def fresh() -> bool:
            newest = _newest_sample(supervised.latest_meter("sim-00001"))
            return newest is not None and newest > killed_at

        _wait(f"telemetry after the {kind} came back", fresh, timeout=120)


def test_up_stops_on_ctrl_c_without_a_traceback(supervised: Platform) -> None:
    code = supervised.ctrl_c()
    output = supervised.output()
    assert code == 0, output
    for noise in NOISE:
        assert noise not in output, output
    assert "ingest worker exited with -9; restarting in 1 s" in output
    assert not supervised.children()


def test_up_refuses_a_port_in_use_before_starting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "AMPFLEET_API_PORT": str(port),
            "AMPFLEET_BROKER_URL": f"mqtt://127.0.0.1:{free_port()}",
            "AMPFLEET_METRICS_PORT": str(free_port()),
            "AMPFLEET_OCPP_PORT": str(free_port()),
        }
        result = subprocess.run(
            [AMPFLEET, "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    assert f"port {port} is in use: another ampfleet up? set AMPFLEET_API_PORT" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Not authorized" not in result.stderr + result.stdout
    assert not (tmp_path / ".ampfleet").exists()  # nothing started, nothing created
