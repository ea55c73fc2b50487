"""``ampfleet worker``: the device-link workers (ingest, status, config, charging, ocpp)."""

from __future__ import annotations

import hmac
import signal
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click

from cloud.cli.common import load_settings
from cloud.settings import Settings


@click.group()
def worker() -> None:
    """Device-link workers: run as many as the load needs."""


class Alongside:
    """A worker and the threads that run beside it in its process: started after it, stopped
    before it."""

    def __init__(self, main: Any, *extra: Any) -> None:
        self.main = main
        self.extra = extra

    def start(self) -> None:
        """Start the worker, then the others."""
        self.main.start()
        for service in self.extra:
            service.start()

    def stop(self) -> None:
        """Stop the others, then the worker."""
        for service in reversed(self.extra):
            service.stop()
        self.main.stop()


def _client_id_for(role: str, client_id: str | None) -> str:
    """The given client id, else the stable default ``ampfleet-<role>-<hostname>``."""
    return client_id or f"ampfleet-{role}-{socket.gethostname()}"


def _serve(
    settings: Settings, role: str, target: str, service: Any, metrics_port: int | None
) -> None:
    """Announce, then run ``service`` (start/stop) until SIGINT or SIGTERM."""
    click.echo(f"{role}: {settings.broker_url} -> {target}")
    port = settings.metrics_port if metrics_port is None else metrics_port
    _serve_until_signal(
        service.start, service.stop, port, settings.metrics_host, settings.metrics_token
    )


def start_metrics_server(port: int, host: str, token: str = "") -> WSGIServer:
    """Serve prometheus_client's ``/metrics`` on ``host:port`` in a daemon thread.

    With ``token``, a request without ``Authorization: Bearer <token>`` gets 401.
    """
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if token:
            given = environ.get("HTTP_AUTHORIZATION", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
                )
                return [b"401 Unauthorized\n"]
        return metrics_app(environ, start_response)

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Log nothing (one line per scrape otherwise)."""

    server = make_server(host, port, app, Server, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _serve_until_signal(
    start: Any, stop: Any, metrics_port: int, metrics_host: str, metrics_token: str = ""
) -> None:
    server = (
        start_metrics_server(metrics_port, metrics_host, metrics_token) if metrics_port else None
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    start()
    done.wait()
    stop()
    if server is not None:
        server.shutdown()
        server.server_close()


_client_id = click.option(
    "--client-id",
    help="MQTT client id; keep it stable across restarts so the broker "
    "redelivers what was not acknowledged (default: ampfleet-<role>-<hostname>).",
)
_metrics_port = click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Port of /metrics (default AMPFLEET_METRICS_PORT; 0: none).",
)

_shared = click.option(
    "--shared/--no-shared",
    default=None,
    help="Use a shared subscription, so that several workers split the load (default: yes on "
    "an external broker, no on the embedded one, which cannot share). A single worker is "
    "better off without: Mosquitto keeps queueing for a plain persistent subscription across "
    "its own restart, not for a shared one (docs/delivery.md).",
)


def _sharing(settings: Settings, shared: bool | None) -> bool:
    return settings.broker == "external" if shared is None else shared


@worker.command("ingest")
@_client_id
@_metrics_port
@_shared
def ingest(client_id: str | None, metrics_port: int | None, shared: bool | None) -> None:
    """Write device telemetry from the broker to the telemetry store, in batches.

    Subscribes with a shared subscription ($share/ingest/...) on Mosquitto/EMQX, so several
    workers split the load; on the embedded broker, which cannot share, run one.
    """
    from cloud.db import Database
    from cloud.devicelink.endpoint import service_endpoint
    from cloud.ingest.families import FamilyDirectory
    from cloud.ingest.worker import IngestWorker
    from cloud.telemetry.store import open_store

    settings = load_settings()
    ingest_worker = IngestWorker(
        open_store(settings),
        service_endpoint(settings),
        _client_id_for("ingest", client_id),
        settings.data_path,
        shared_subscriptions=_sharing(settings, shared),
        batch_size=settings.ingest_batch_size,
        flush_ms=settings.ingest_flush_interval,
        queue_size=settings.ingest_queue_size,
        max_payload_bytes=settings.max_payload_bytes,
        max_skew_ms=settings.max_clock_skew * 1000,
        families=FamilyDirectory(Database(settings.database_url)),
    )
    _serve(settings, "ingest", settings.telemetry_store, ingest_worker, metrics_port)


@worker.command("status")
@_client_id
@_metrics_port
@_shared
def status(client_id: str | None, metrics_port: int | None, shared: bool | None) -> None:
    """Keep each device's online/offline state and last-seen time from its status topic."""
    from broker.admin import broker_admin
    from broker.registry import refresher
    from cloud.audit.service import system_recorder
    from cloud.db import Database
    from cloud.devicelink.endpoint import service_endpoint
    from cloud.devices.status_worker import StatusWorker
    from cloud.ocpp.bridges import bridge_status

    settings = load_settings()
    database = Database(settings.database_url)
    status_worker = StatusWorker(
        database,
        service_endpoint(settings),
        _client_id_for("status", client_id),
        settings.data_path,
        shared_subscriptions=_sharing(settings, shared),
        max_payload_bytes=settings.max_payload_bytes,
        max_skew_ms=settings.max_clock_skew * 1000,
        gateways=bridge_status,  # an OCPP bridge's will marks its chargers offline
        audit=system_recorder("status"),
        # A device quarantined here loses its rights on the broker at once (Mosquitto).
        on_quarantine=refresher(
            broker_admin(settings), database, passwords=settings.device_passwords
        ),
    )
    _serve(settings, "status", "records", status_worker, metrics_port)


@worker.command("config")
@_client_id
@_metrics_port
@_shared
@click.option(
    "--timeout",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Seconds a device has to answer a configuration change before it is timed_out.",
)
@click.option(
    "--sweep-interval",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Seconds between sweeps (re-send unsent changes, time out unanswered ones).",
)
def config(
    client_id: str | None,
    metrics_port: int | None,
    shared: bool | None,
    timeout: int,
    sweep_interval: float,
) -> None:
    """Store the configuration devices report and resolve pending configuration changes."""
    import datetime as dt

    from cloud.configuration.worker import ConfigWorker
    from cloud.db import Database
    from cloud.devicelink.endpoint import service_endpoint

    settings = load_settings()
    config_worker = ConfigWorker(
        Database(settings.database_url),
        service_endpoint(settings),
        _client_id_for("config", client_id),
        settings.data_path,
        shared_subscriptions=_sharing(settings, shared),
        timeout=dt.timedelta(seconds=timeout),
        sweep_interval=sweep_interval,
        max_payload_bytes=settings.max_payload_bytes,
    )
    _serve(settings, "config", "records", config_worker, metrics_port)


@worker.command("charging")
@_client_id
@_metrics_port
@_shared
def charging(client_id: str | None, metrics_port: int | None, shared: bool | None) -> None:
    """Build charging sessions from the chargers' events (docs/device-contract.md 14).

    Applies charging.started, charging.stopped and authorization.refused to the records, stops
    sessions whose card the cloud refuses, and every AMPFLEET_CHARGING_REFRESH_INTERVAL
    seconds fails app starts that never began and republishes the authorization lists of
    chargers whose guest windows opened or closed. Shares af/+/events ($share/charging/...)
    with the other charging workers on Mosquitto/EMQX; on the embedded broker, run one.

    It also keeps the PKI's CRL current: every AMPFLEET_PKI_CRL_CHECK_INTERVAL seconds it
    issues a new CRL once half of the current one has passed, and rewrites AMPFLEET_PKI_CRL_FILE
    and AMPFLEET_PKI_CA_FILE when they are behind the records (docs/pki.md); and it answers
    the devices' certificate requests (af/+/cert/request, docs/device-contract.md 4.10) on a
    connection of its own (client id <client id>-certs, $share/certs/... on Mosquitto/EMQX).
    """
    import datetime as dt

    from cloud.charging.worker import ChargingWorker
    from cloud.db import Database
    from cloud.devicelink.endpoint import service_endpoint
    from cloud.pki.crl import CrlKeeper
    from cloud.pki.renewal import RenewalWorker

    settings = load_settings()
    database = Database(settings.database_url)
    charging_worker = ChargingWorker(
        database,
        service_endpoint(settings),
        _client_id_for("charging", client_id),
        settings.data_path,
        shared_subscriptions=_sharing(settings, shared),
        refresh_interval=float(settings.charging_refresh_interval),
        start_timeout=dt.timedelta(seconds=settings.charging_start_timeout),
        command_timeout=dt.timedelta(seconds=settings.charging_start_timeout),
        max_payload_bytes=settings.max_payload_bytes,
        max_skew_ms=settings.max_clock_skew * 1000,
    )
    renewals = RenewalWorker(
        database,
        service_endpoint(settings),
        _client_id_for("charging", client_id) + "-certs",
        settings.data_path,
        shared_subscriptions=_sharing(settings, shared),
        settings=settings,
        max_payload_bytes=settings.max_payload_bytes,
    )
    service = Alongside(charging_worker, CrlKeeper(database, settings), renewals)
    _serve(settings, "charging", "records", service, metrics_port)


@worker.command("forget")
@click.argument("client_id")
def forget(client_id: str) -> None:
    """End the broker session of a worker that is gone for good (after scaling down).

    Until then the broker keeps that worker's share of a shared subscription for it.
    """
    from cloud.devicelink.endpoint import service_endpoint
    from cloud.devicelink.threaded import end_session

    end_session(service_endpoint(load_settings()), client_id)
    click.echo(f"session {client_id} ended")


@worker.command("ocpp")
@_client_id
@_metrics_port
@click.option("--host", help="Address to listen on (default AMPFLEET_OCPP_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default AMPFLEET_OCPP_PORT).")
def ocpp(
    client_id: str | None, metrics_port: int | None, host: str | None, port: int | None
) -> None:
    """Bridge OCPP 1.6J and 2.0.1 chargers onto the device contract (docs/ocpp.md).

    One WebSocket listener with one security profile (AMPFLEET_OCPP_SECURITY_PROFILE); run
    one bridge per profile, and as many per profile as the load needs behind a TCP load
    balancer: each receives the commands of the chargers it holds from the broker.
    """
    from cloud.db import Database
    from cloud.devicelink.accounts import bridge_password
    from cloud.devicelink.endpoint import Endpoint
    from cloud.ocpp.worker import OcppWorker

    settings = load_settings()
    endpoint = Endpoint.from_url(
        settings.broker_url,
        settings.broker_bridge_user,
        bridge_password(settings),
        settings.broker_tls_ca_file,
    )
    bridge = OcppWorker(
        settings, Database(settings.database_url), endpoint, _client_id_for("ocpp", client_id)
    )
    if host is not None:
        bridge.host = host
    if port is not None:
        bridge.port = port
    target = f"ws{'s' if settings.ocpp_security_profile > 1 else ''}://{bridge.host}:{bridge.port}"
    _serve(settings, "ocpp", target, bridge, metrics_port)
