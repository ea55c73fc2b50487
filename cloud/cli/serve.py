"""``ampfleet api`` (gunicorn) and ``ampfleet up`` (the whole embedded platform)."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from cloud.cli.common import load_settings, prepare_database
from cloud.settings import Settings

if TYPE_CHECKING:
    from cloud.cli.supervisor import Child
    from cloud.devicelink.endpoint import Endpoint


def gunicorn_options(settings: Settings, bind: str | None, workers: int | None) -> dict[str, Any]:
    """gunicorn settings from ours: bind, workers, threads, TLS."""
    options: dict[str, Any] = {
        "bind": bind or f"{settings.api_host}:{settings.api_port}",
        "workers": workers or settings.api_workers,
        "threads": settings.api_threads,
        "worker_class": "gthread",
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        # The app (and its signing key) is built before forking, so every worker shares it.
        "preload_app": True,
        "forwarded_allow_ips": "*" if settings.trusted_proxies else "127.0.0.1",
        # gunicorn's control socket defaults to one path per user: two instances would fight
        # over it, and nothing of ours uses it.
        "control_socket_disable": True,
    }
    if settings.tls_cert_file:
        options["certfile"] = settings.tls_cert_file
        options["keyfile"] = settings.tls_key_file
    return options


@click.command("api")
@click.option("--bind", help="host:port to listen on (default: AMPFLEET_API_HOST:_PORT).")
@click.option("--workers", type=click.IntRange(min=1), help="gunicorn worker processes.")
def api(bind: str | None, workers: int | None) -> None:
    """Serve the REST API with gunicorn (production server; TLS when configured)."""
    from gunicorn.app.base import BaseApplication

    from cloud.app import create_app

    settings = load_settings()
    options = gunicorn_options(settings, bind, workers)

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_app(settings)

    Server().run()


@click.command("up")
@click.option("--port", type=click.IntRange(1, 65535), help="API port (default 8080).")
def up(port: int | None) -> None:
    """Start the embedded platform until Ctrl-C: migrate, seed, then run the MQTT broker, the
    API, the ingest, status, configuration and charging workers, the OCPP bridge and a few
    simulated chargers; restart any of them that dies."""
    from cloud.cli.supervisor import Supervisor

    if port is not None:
        os.environ["AMPFLEET_API_PORT"] = str(port)
    settings = load_settings()
    _check_ports(settings)
    click.echo(f"ampfleet: data in {settings.data_path.resolve()}")
    prepare_database(settings).engine.dispose()
    base = settings.public_url
    password_file = settings.data_path / "initial-admin-password"
    click.echo(f"""
  API            {base}/api/v1
  API docs       {base}/api/v1/docs
  OpenAPI        {base}/api/v1/openapi.json
  admin login    {settings.admin_email}
  password       {"in " + str(password_file) if password_file.exists() else "as you set it"}""")
    click.echo(
        f"  MQTT broker    {settings.broker_url}  (devices authenticate with their credentials)\n"
        f"  OCPP chargers  ws://{settings.ocpp_host}:{settings.ocpp_port}/ocpp/<charger id>"
        "  (1.6J and 2.0.1, docs/ocpp.md)"
    )
    if settings.simulated_chargers:
        click.echo(
            f"  simulated      {settings.simulated_chargers} chargers, organization 'simulated'"
            " (AMPFLEET_SIMULATED_CHARGERS=0: none)"
        )
    click.echo("  Ctrl-C stops them all; a process that dies is restarted.\n")
    supervisor = Supervisor(platform_children(settings))
    supervisor.install_signal_handlers()
    supervisor.run()


def platform_children(settings: Settings) -> list[Child]:
    """The processes of the embedded platform, in start order, with their stop stages: the
    devices' side (simulated chargers, OCPP bridge), the API, the broker (it hands what it
    still queues to the workers, hence before them, with time to do it), the workers."""
    from cloud.cli.supervisor import Child
    from cloud.devicelink.endpoint import service_endpoint

    command = [sys.executable, "-m", "cloud.cli"]
    children: list[Child] = []
    if settings.broker == "embedded":
        endpoint = service_endpoint(settings)
        children.append(
            Child(
                "broker",
                [*command, "broker", "run"],
                stage=3,
                stop_timeout=10,
                ready=lambda alive: wait_for_broker(endpoint, alive),
            )
        )
    children.append(Child("API", [*command, "api"], stage=2))
    # One worker of each kind, so plain persistent subscriptions (--no-shared): on Mosquitto
    # they are queued for across a broker restart, shared ones are not (docs/delivery.md).
    ingest = [*command, "worker", "ingest", "--no-shared"]
    children.append(Child("ingest worker", ingest, stage=4))
    # One metrics port per host: the ingest worker has it; the other workers' counters are
    # visible through the API's fleet gauges.
    for role in ("status", "config", "charging"):
        argv = [*command, "worker", role, "--no-shared", "--metrics-port", "0"]
        children.append(Child(f"{role} worker", argv, stage=4))
    ocpp = [*command, "worker", "ocpp", "--metrics-port", "0"]
    children.append(Child("OCPP bridge", ocpp, stage=1))
    if settings.simulated_chargers:
        simulate = [*command, "simulate", "--devices", str(settings.simulated_chargers)]
        children.append(Child("simulator", simulate, stage=0))
    return children


def _check_ports(settings: Settings) -> None:
    """Refuse to start, naming the port and its setting, when a listener's port is taken
    (another ``ampfleet up``, a system Mosquitto...): before anything starts."""
    wanted = [(settings.api_host, settings.api_port, "AMPFLEET_API_PORT")]
    if settings.broker == "embedded":
        broker = urlsplit(settings.broker_url)
        host = broker.hostname or "127.0.0.1"
        wanted.append((host, broker.port or 1883, "AMPFLEET_BROKER_URL"))
        if settings.broker_tls_port:
            wanted.append((host, settings.broker_tls_port, "AMPFLEET_BROKER_TLS_PORT"))
        if settings.broker_mtls_port:
            wanted.append((host, settings.broker_mtls_port, "AMPFLEET_BROKER_MTLS_PORT"))
    wanted.append((settings.ocpp_host, settings.ocpp_port, "AMPFLEET_OCPP_PORT"))
    if settings.metrics_port:
        wanted.append((settings.metrics_host, settings.metrics_port, "AMPFLEET_METRICS_PORT"))
    problems = [
        problem
        for host, port, variable in wanted
        if (problem := port_problem(host, port, variable)) is not None
    ]
    if problems:
        raise click.ClickException("; ".join(problems))


def port_problem(host: str, port: int, variable: str) -> str | None:
    """Why nothing can listen on ``host:port`` (None when something can)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # As the servers themselves bind: a port in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"port {port} is in use: another ampfleet up? set {variable}"
        return f"cannot listen on {host}:{port} ({exc.strerror or exc}): set {variable}"
    return None


def wait_for_broker(endpoint: Endpoint, alive: Callable[[], bool], timeout: float = 60) -> bool:
    """Wait until the broker answers an MQTT CONNECT of the service account (a bare TCP probe
    makes amqtt log a failed session); False when ``alive`` turns false or time is up."""
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        if mqtt_ping(endpoint):
            return True
        time.sleep(0.2)
    return False


def mqtt_ping(endpoint: Endpoint, timeout: float = 5) -> bool:
    """Whether the broker accepts the endpoint's credentials: CONNECT, CONNACK, DISCONNECT."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            context = endpoint.ssl_context()
            conn = (
                context.wrap_socket(raw, server_hostname=endpoint.host)
                if isinstance(context, ssl.SSLContext)
                else raw
            )
            conn.sendall(connect_packet(f"ampfleet-up-{os.getpid()}", endpoint))
            connack = conn.recv(4)
            if connack[:1] == b"\x20":
                conn.sendall(b"\xe0\x00")  # DISCONNECT: leave without firing anything
            return connack[:2] == b"\x20\x02" and connack[3:4] == b"\x00"
    except OSError:
        return False


def connect_packet(client_id: str, endpoint: Endpoint) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, user name and password; 3.1)."""

    def field(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    variable = field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 10)
    body = variable + field(client_id) + field(endpoint.username) + field(endpoint.password)
    length = b""
    remaining = len(body)
    while True:  # the remaining length, 7 bits a byte (2.2.3)
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return b"\x10" + length + body
