"""``ampfleet api`` (gunicorn) and ``ampfleet up`` (the whole embedded platform)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click

from cloud.cli.common import load_settings, prepare_database
from cloud.settings import Settings


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
    simulated chargers."""
    if port is not None:
        os.environ["AMPFLEET_API_PORT"] = str(port)
    settings = load_settings()
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
        "  (1.6J and 2.0.1, docs/ocpp.md)\n"
    )
    command = [sys.executable, "-m", "cloud.cli"]
    children: list[subprocess.Popen[bytes]] = []
    if settings.broker == "embedded":
        children.append(subprocess.Popen([*command, "broker", "run"]))
        _wait_for_port(settings.broker_url, children[0])
    children.append(subprocess.Popen([*command, "api"]))
    children.append(subprocess.Popen([*command, "worker", "ingest"]))
    # One metrics port per host: the ingest worker has it; the status worker's counters are
    # visible through the API's fleet gauges.
    children.append(subprocess.Popen([*command, "worker", "status", "--metrics-port", "0"]))
    children.append(subprocess.Popen([*command, "worker", "config", "--metrics-port", "0"]))
    children.append(subprocess.Popen([*command, "worker", "charging", "--metrics-port", "0"]))
    children.append(subprocess.Popen([*command, "worker", "ocpp", "--metrics-port", "0"]))
    if settings.simulated_chargers:
        simulate = [*command, "simulate", "--devices", str(settings.simulated_chargers)]
        children.append(subprocess.Popen(simulate))
        click.echo(
            f"  simulated      {settings.simulated_chargers} chargers, organization 'simulated'"
            " (AMPFLEET_SIMULATED_CHARGERS=0: none)\n"
        )
    _supervise(children)


def _wait_for_port(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until the broker accepts TCP connections (the workers connect right away)."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 1883), timeout=1
            ).close()
            return
        except OSError:
            time.sleep(0.2)
    raise click.ClickException(f"the broker did not come up on {url}")


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Wait until a child dies or we are told to stop; then stop every child."""
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM)]
    if failed and not stopping:
        raise click.ClickException(f"a platform process exited with {failed[0].returncode}")
