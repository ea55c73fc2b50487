"""docker-compose.yml, run for real without Docker (issue 13, item 6).

No Docker engine nor Docker Hub here, so the test starts the services the compose file names,
in its dependency order and with its commands, environment and healthchecks, translated by
``tests.stack.compose`` (hostnames -> 127.0.0.1 and free ports; the rules are listed there) and
run from Debian's packages and the virtualenv: the system MariaDB (a fresh database), Mosquitto
with the configuration and TLS certificate the ``mosquitto-config`` one-shot generates, Debian's
InfluxDB, the ``migrate`` one-shot, the API under gunicorn, the provisioner, two ingest workers,
status, config, charging, the OCPP bridge, the ``prometheus-init`` one-shot and Prometheus.
Grafana has no Debian package: it is the one service not started.

It checks that every one-shot succeeds, every long-running service passes its own healthcheck,
Prometheus scrapes every worker and the API with ``up == 1``, a simulated charger connected
over TLS with the generated CA gets its telemetry and a charging session to the API, and a
charger with a certificate of the platform PKI (which the ``pki-init`` one-shot made) gets its
telemetry through the mutual-TLS listener, is disconnected when the certificate is revoked and
refused at the handshake once the ``crl-reload`` sidecar made Mosquitto re-read the CRL. The
files the one-shots leave have their modes checked: keys and accounts 0600, the public CA
chain, CRL and broker CA readable by others (Mosquitto's user, the cloud's).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.core.contract import encode_telemetry
from tests.mqtt import Mqtt, MqttError
from tests.pki.support import make_csr
from tests.services.influxd import Influxd
from tests.stack.compose import ROOT, ComposeFile, Translator, required_variables

pytestmark = pytest.mark.mariadb

NEEDED = (
    "/usr/sbin/mosquitto",
    "/usr/bin/mosquitto_pub",
    "/usr/bin/influxd",
    "/usr/bin/prometheus",
    "/usr/bin/wget",
)
# Services that are not processes of this test: the system MariaDB and the Influxd helper stand
# for mysql and influxdb (their healthchecks need their images' own tools).
STANDING_IN = {"mysql", "influxdb"}
NOT_RUN = {"grafana": "no Debian package (tests/test_compose.py checks its provisioning)"}
START_TIMEOUT = 120.0
# Configuration files a one-shot writes for another service: (volume, file, reader). They name
# services by their hostnames, which Docker's DNS resolves: here the translator's rules do.
GENERATED = {"prometheus-init": ("prometheus-config", "prometheus.yml", "prometheus")}


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, detail: Callable[[], Any] = str
) -> Any:
    """The first truthy result of ``check()``; fail naming ``what`` (and ``detail()``) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    pytest.fail(f"{what}: not after {timeout:.0f}s (last: {last!r}) {detail()}")


class Stack:
    """The running services: processes in their own sessions, logs in the test directory."""

    def __init__(self, compose: ComposeFile, translator: Translator, logs: Path) -> None:
        self.compose, self.translator, self.logs = compose, translator, logs
        logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        """The log file of a service."""
        return self.logs / f"{name}.log"

    def run_once(self, name: str) -> None:
        """Run a one-shot to completion; fail with its log unless it exits 0."""
        with self.log(name).open("ab") as out:
            done = subprocess.run(
                self.translator.command(name),
                env=self.translator.environment(name),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=START_TIMEOUT,
                check=False,
            )
        assert done.returncode == 0, f"one-shot {name} exited {done.returncode}:\n" + _tail(
            self.log(name)
        )
        if name in GENERATED:
            volume, filename, reader = GENERATED[name]
            path = self.translator.volume(volume) / filename
            path.write_text(self.translator.text(reader, path.read_text()))

    def start(self, name: str) -> None:
        """Start a long-running service."""
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                self.translator.command(name),
                env=self.translator.environment(name),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def healthy(self, name: str) -> bool:
        """Whether the service's own healthcheck passes now (it must still run, too)."""
        process = self.processes[name]
        assert process.poll() is None, f"{name} exited {process.returncode}:\n" + _tail(
            self.log(name)
        )
        argv = self.translator.healthcheck(name)
        assert argv is not None, f"{name} has no healthcheck"
        done = subprocess.run(
            argv,
            env=self.translator.environment(name),
            cwd=ROOT,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode == 0

    def wait_healthy(self, name: str) -> None:
        """Wait until the service is healthy, as a ``service_healthy`` dependency does."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.healthy(name):
            if time.monotonic() > deadline:
                pytest.fail(f"{name} never became healthy:\n{_tail(self.log(name))}")
            time.sleep(1)

    def stop(self) -> None:
        """Stop the services as ``docker compose down`` does: dependents first, each one given
        SIGTERM and some seconds before SIGKILL."""
        for process in reversed(list(self.processes.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _http(
    method: str,
    url: str,
    *,
    token: str = "",
    form: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def stack(make_mariadb_database: Callable[[], str], tmp_path: Path) -> Iterator[Stack]:
    """Every service of docker-compose.yml but Grafana, started in dependency order."""
    missing = [b for b in NEEDED if not os.access(b, os.X_OK)]
    if missing:
        pytest.skip(f"not installed: {missing} (scripts/services.sh installs them)")
    text = (ROOT / "docker-compose.yml").read_text()
    # The .env a user writes from .env.example: every secret the file requires.
    env = {name: secrets.token_hex(16) for name in required_variables(text)}
    compose = ComposeFile(env)
    # The simulated charger (`ampfleet simulate`) logs in with a password, which production
    # turns off by default (AMPFLEET_BROKER_DEVICE_PASSWORDS, docs/mutual-tls.md): as if the
    # image said otherwise, so that every process of the stack (the resync sidecar too) agrees.
    compose.image_env["AMPFLEET_BROKER_DEVICE_PASSWORDS"] = "true"
    translator = Translator(compose, tmp_path, make_mariadb_database())
    stack = Stack(compose, translator, tmp_path / "logs")
    with Influxd(tmp_path / "influxd") as influx:
        translator.ports[("influxdb", 8086)] = influx.port
        translator.ports[("mysql", 3306)] = 3306  # the system MariaDB (and a fresh database)
        try:
            for name in compose.order():
                if name in STANDING_IN or name in NOT_RUN:
                    continue
                for dependency, condition in compose.depends_on(name).items():
                    assert dependency not in NOT_RUN, f"{name} needs {dependency}"
                    if dependency in STANDING_IN:
                        continue  # up before anything else
                    if condition == "service_healthy":
                        stack.wait_healthy(dependency)
                    elif condition == "service_completed_successfully":
                        assert compose.is_one_shot(dependency), dependency
                if compose.is_one_shot(name):
                    stack.run_once(name)  # to completion: its dependents may rely on it
                else:
                    stack.start(name)
            yield stack
        finally:
            stack.stop()


def test_the_compose_stack_serves_devices_and_prometheus_scrapes_every_worker(
    stack: Stack, tmp_path: Path
) -> None:
    compose, translator = stack.compose, stack.translator
    running = list(stack.processes)
    assert {"api", "ingest-1", "ingest-2", "status", "config", "charging", "ocpp-1"} <= set(running)
    for name in running:
        stack.wait_healthy(name)
    # The OCPP bridge listens where its published port points (chargers connect there).
    socket.create_connection(("127.0.0.1", translator.port("ocpp-1", 9000)), timeout=5).close()

    # Prometheus scrapes every service with /metrics, each one up.
    with_metrics = {
        n for n in running if compose.services[n]["command"][:2] == ["ampfleet", "worker"]
    }
    wanted = {f"127.0.0.1:{translator.port(n, 9100)}" for n in with_metrics}
    wanted.add(f"127.0.0.1:{translator.port('api', 8080)}")
    prometheus = f"http://127.0.0.1:{translator.port('prometheus', 9090)}"

    seen: list[Any] = []

    def all_up() -> bool:
        status, body = _http("GET", f"{prometheus}/api/v1/query?query=up")
        if status != 200:
            seen.append(body)
            return False
        up = {r["metric"]["instance"]: r["value"][1] for r in body["data"]["result"]}
        seen.append(up)
        return set(up) == wanted and set(up.values()) == {"1"}

    wait_for("every target up in Prometheus", all_up, 90, lambda: (seen[-1:], wanted))

    # The one-shots run again on every `docker compose up`: they keep what devices and
    # Prometheus already use (the CA, the accounts, the API client).
    certs = translator.volume("mosquitto-certs")
    ca = (certs / "ca.pem").read_bytes()
    for one_shot in ("mosquitto-config", "prometheus-init"):
        stack.run_once(one_shot)
    assert (certs / "ca.pem").read_bytes() == ca
    init_log = stack.log("mosquitto-config").read_text()
    assert "kept the CA" in init_log and "(Mosquitto owns it)" in init_log
    assert "kept the API client" in stack.log("prometheus-init").read_text()

    # A charger on the TLS listener, trusting the generated CA, reaches the API.
    api = f"http://127.0.0.1:{translator.port('api', 8080)}/api/v1"
    env = translator.environment("api")
    env["AMPFLEET_BROKER_URL"] = f"mqtts://127.0.0.1:{translator.port('mosquitto', 8883)}"
    env["AMPFLEET_BROKER_TLS_CA_FILE"] = str(translator.volume("mosquitto-certs") / "ca.pem")
    env["AMPFLEET_DATA_DIR"] = str(tmp_path / "simulator")
    with (tmp_path / "logs" / "simulate.log").open("ab") as out:
        simulator = subprocess.Popen(
            ["ampfleet", "simulate", "--devices", "1", "--idle-mean", "1", "--duration", "300"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        status, tokens = _http(
            "POST",
            f"{api}/auth/token",
            form={
                "grant_type": "password",
                "username": env["AMPFLEET_ADMIN_EMAIL"],
                "password": env["AMPFLEET_ADMIN_PASSWORD"],
            },
        )
        assert status == 200, tokens
        token = tokens["access_token"]

        def got(path: str) -> Any:
            assert simulator.poll() is None, _tail(tmp_path / "logs" / "simulate.log")
            status, body = _http("GET", f"{api}{path}", token=token)
            return body if status == 200 and body else None

        def latest_values() -> Any:
            latest = got("/devices/sim-00001/telemetry/latest")
            return latest["values"] if latest else None

        wait_for("the charger's telemetry in the API", latest_values, 120)
        sessions = wait_for(
            "a charging session in the API", lambda: got("/devices/sim-00001/sessions"), 120
        )
        assert sessions[0]["device_id"] == "sim-00001"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(simulator.pid, signal.SIGTERM)
        try:
            simulator.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(simulator.pid, signal.SIGKILL)
            simulator.wait()

    _files_private_or_public_and_tls_everywhere(translator)
    _a_charger_with_a_certificate_over_mutual_tls_until_revoked(stack, tmp_path, api, token)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files_private_or_public_and_tls_everywhere(translator: Translator) -> None:
    certs = translator.volume("mosquitto-certs")
    for secret in (certs / "ca.key", certs / "server.key"):
        assert _mode(secret) == 0o600, secret
    dynsec = translator.volume("mosquitto-data") / "dynamic-security.json"
    assert _mode(dynsec) == 0o600  # password hashes
    assert _mode(certs / "ca.pem") & 0o044 == 0o044
    # The PKI's public volume: Mosquitto's user reads it, the ampfleet user writes it.
    public = translator.volume("ampfleet-pki")
    assert _mode(public) == 0o755
    for name in ("ca-chain.pem", "crl.pem", "broker-ca.pem"):
        assert _mode(public / name) == 0o644, name
    assert (public / "broker-ca.pem").read_bytes() == (certs / "ca.pem").read_bytes()
    assert sorted(p.name for p in public.iterdir()) == ["broker-ca.pem", "ca-chain.pem", "crl.pem"]
    # TLS on every listener: the password one (the cloud's) and the devices' mutual TLS.
    conf = (translator.volume("mosquitto-data") / "mosquitto.conf").read_text()
    listeners = conf.split("\nlistener ")[1:]
    assert len(listeners) == 2 and all("\ncertfile " in block for block in listeners), conf
    assert "require_certificate true" in listeners[1]


def _handshake(port: int, server_ca: Path, certfile: Path, keyfile: Path, client_id: str) -> str:
    """Present a certificate on the mutual-TLS listener and send a CONNECT: ``connack`` when
    the broker took it, else the TLS alert it refused the certificate with (TLS 1.2: the
    alert comes inside the handshake)."""
    context = ssl.create_default_context(cafile=str(server_ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            variable = b"\x00\x04MQTT\x04\x02\x00\x3c"  # MQTT 3.1.1, clean session
            body = variable + len(client_id).to_bytes(2, "big") + client_id.encode()
            tls.sendall(b"\x10" + bytes([len(body)]) + body)
            return "connack" if tls.recv(4)[:1] == b"\x20" else "closed"
    except ssl.SSLError as exc:
        return str(exc.reason or exc).lower()
    except (ConnectionResetError, BrokenPipeError) as exc:
        return f"reset: {exc}"


def _a_charger_with_a_certificate_over_mutual_tls_until_revoked(
    stack: Stack, tmp_path: Path, api: str, token: str
) -> None:
    """What docs/production.md tells a device to do: a certificate from the PKI, the broker's
    CA, port 8884; then what a revocation does to it through the crl-reload sidecar."""
    translator = stack.translator
    status, organization = _http(
        "POST", f"{api}/organizations", token=token, body={"slug": "mtls", "name": "mTLS"}
    )
    assert status == 201, organization
    status, device = _http(
        "POST",
        f"{api}/devices",
        token=token,
        body={
            "serial": "SN-MTLS-1",
            "hardware_family": "ac22-3p",
            "organization_id": organization["id"],
            "state": "active",
        },
    )
    assert status == 201, device
    device_id = device["id"]
    key = ec.generate_private_key(ec.SECP256R1())
    status, issued = _http(
        "POST",
        f"{api}/devices/{device_id}/certificates",
        token=token,
        body={"csr": make_csr(device_id, key)},
    )
    assert status == 201, issued
    status, approved = _http("POST", f"{api}/devices/{device_id}/approve", token=token)
    assert status == 200, approved
    certfile, keyfile = tmp_path / "charger.pem", tmp_path / "charger.key"
    certfile.write_text(issued["certificate_pem"])
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ca = translator.volume("mosquitto-certs") / "ca.pem"
    port = translator.port("mosquitto", 8884)

    def mqtt() -> Mqtt:
        client = Mqtt("127.0.0.1", port, None, None, client_id=device_id)
        client.client.tls_set(
            ca_certs=str(server_ca),
            certfile=str(certfile),
            keyfile=str(keyfile),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        return client

    with mqtt().connected() as charger:
        sample = encode_telemetry(int(time.time() * 1000), 1, {"power_w": 4321.0}, node="meter")
        charger.publish(f"af/{device_id}/telemetry", sample)

        def latest() -> Any:
            status, body = _http(
                "GET", f"{api}/devices/{device_id}/telemetry/latest?node=meter", token=token
            )
            return body["values"] if status == 200 and body and body.get("values") else None

        values = wait_for("the certificate charger's telemetry in the API", latest, 20)
        assert values["power_w"]["value"] == 4321.0, values

        status, revoked = _http(
            "POST",
            f"{api}/certificates/{issued['serial']}/revoke",
            token=token,
            body={"reason": "keyCompromise"},
        )
        assert status == 200, revoked
        assert charger.wait_disconnected(2.0)  # the provisioner's account removed, at once
    # The API rewrote crl.pem in the shared volume; the sidecar's SIGHUP makes Mosquitto
    # re-read it (it looks every second).
    deadline = time.monotonic() + 5
    while (
        answer := _handshake(port, server_ca, certfile, keyfile, device_id)
    ) == "connack" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "alert_certificate_revoked" in answer, (answer, _tail(stack.log("crl-reload")))
    with pytest.raises(MqttError):
        mqtt().connect()
