"""``ampfleet broker``: run the embedded broker, keep Mosquitto in step with the registry."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from pathlib import Path

import click

from cloud.cli.common import load_settings
from cloud.settings import Settings, SettingsError


@click.group()
def broker() -> None:
    """MQTT broker: the embedded one (amqtt), or Mosquitto's accounts (external)."""


@broker.command("run")
@click.option(
    "--wait-for-workers/--no-wait-for-workers",
    default=True,
    show_default=True,
    help="Refuse devices (CONNACK 3, server unavailable: they retry) until the ingest, "
    "status, charging and config workers have their persistent subscriptions.",
)
def run(wait_for_workers: bool) -> None:
    """Serve MQTT with the embedded broker (amqtt) until Ctrl-C or SIGTERM.

    Listens on the port of AMPFLEET_BROKER_URL (plus a TLS listener on
    AMPFLEET_BROKER_TLS_PORT when set). Devices authenticate with their credentials from the
    records database (run `ampfleet db upgrade` first); the cloud's services with
    AMPFLEET_BROKER_SERVICE_USER and its password. With AMPFLEET_BROKER_MTLS_PORT, devices
    may also connect there with a certificate of the platform's PKI (mutual TLS; the
    certificate's CN is the device id and the client id).

    On SIGTERM or Ctrl-C it refuses and disconnects devices, lets the connected workers take
    what is queued for them (at most 7 s), and keeps the persistent sessions with what is
    left in broker-sessions.db in the data directory, for the next start: stop the broker
    before the workers.
    """
    from amqtt.errors import BrokerError

    from broker.embedded import Durability
    from broker.embedded import run as run_broker

    settings = load_settings()
    # What the broker tells an operator (sessions kept and restored, devices refused).
    logging.basicConfig(level=settings.log_level, format="broker: %(levelname)s %(message)s")
    if settings.broker != "embedded":
        raise click.ClickException(
            "AMPFLEET_BROKER is external: run Mosquitto (`ampfleet broker mosquitto-config` "
            "writes its configuration)"
        )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        durability = Durability.for_settings(settings)
        if not wait_for_workers:
            durability = dataclasses.replace(durability, channels=())
        await run_broker(
            settings,
            stop=stop,
            ready=lambda *_: click.echo(f"broker: serving {settings.broker_url}"),
            durability=durability,
        )

    try:
        asyncio.run(serve())
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    except (OSError, BrokerError) as exc:  # the port is taken, a TLS file is unreadable
        raise click.ClickException(f"the broker cannot start: {exc}") from exc


@broker.command("resync")
@click.option(
    "--interval",
    type=click.FloatRange(min=1),
    help="Keep running, resyncing every INTERVAL seconds (a sidecar instead of a cron job).",
)
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Touch this file after each successful resync (a container healthcheck reads its age).",
)
def resync(interval: float | None, health_file: Path | None) -> None:
    """Make Mosquitto's accounts exactly the registry's (idempotent).

    Creates or repairs the service account and each device's role (narrowed to publishing its
    status while it is quarantined or not approved); disables devices that are suspended or
    decommissioned; deletes the accounts of devices without an active credential or a
    certificate in force. Only password hashes are stored, so a device whose account Mosquitto lost
    (or whose rotation it missed) is disabled and listed: rotate its credentials. With the
    embedded broker there is nothing to do: it reads the registry itself.
    """
    settings = load_settings()
    while True:
        try:
            click.echo(_resync_once(settings))
            if health_file is not None:
                health_file.touch()
        except click.ClickException as exc:
            if interval is None:
                raise
            click.echo(f"resync failed: {exc.message}", err=True)
        if interval is None:
            return
        time.sleep(interval)


def _resync_once(settings: Settings) -> str:
    from broker.admin import broker_admin
    from broker.errors import BrokerAdminError
    from broker.registry import active_accounts, device_ids
    from cloud.db import Database

    if settings.broker == "embedded":
        return "embedded broker: it reads the registry, nothing to resync"
    database = Database(settings.database_url)
    try:
        accounts = active_accounts(database, passwords=settings.device_passwords)
        registered = device_ids(database)
        report = broker_admin(settings).resync(accounts, registered=registered)
    except (BrokerAdminError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.engine.dispose()
    return f"{len(accounts)} device account(s) in the registry\n{report.summary()}"


@broker.command("mosquitto-config")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=1883,
    show_default=True,
    help="Port of the plain (no TLS) listener. 0: none (production: TLS on every listener).",
)
@click.option(
    "--tls-port",
    type=click.IntRange(0, 65535),
    default=8883,
    show_default=True,
    help="0: no TLS listener.",
)
@click.option("--certfile", default="/mosquitto/certs/server.pem", show_default=True)
@click.option("--keyfile", default="/mosquitto/certs/server.key", show_default=True)
@click.option(
    "--data-dir",
    default="/mosquitto/data",
    show_default=True,
    help="Where Mosquitto keeps persistence and dynamic-security.json.",
)
@click.option(
    "--plugin",
    default="/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    show_default=True,
    help="Path of the dynamic-security plugin (the eclipse-mosquitto image has it at "
    "/usr/lib/mosquitto_dynamic_security.so).",
)
@click.option(
    "--user",
    help="User Mosquitto switches to when started as root; it must own the data directory "
    "(default: Mosquitto's own, `mosquitto`).",
)
@click.option(
    "--mtls-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the devices' mutual-TLS listener (client certificate of the platform PKI "
    "required, its CN the username and client id; docs/mutual-tls.md). 0: none.",
)
@click.option(
    "--client-ca-file",
    help="The platform's CA chain as Mosquitto sees it (default: AMPFLEET_PKI_CA_FILE).",
)
@click.option(
    "--crl-file",
    help="The platform's CRL as Mosquitto sees it (default: AMPFLEET_PKI_CRL_FILE).",
)
@click.option(
    "--pid-file",
    help="Where Mosquitto writes its process id (for `ampfleet broker crl-reload`).",
)
def mosquitto_config(
    directory: Path,
    port: int,
    tls_port: int,
    certfile: str,
    keyfile: str,
    data_dir: str,
    plugin: str,
    user: str | None,
    mtls_port: int,
    client_ca_file: str | None,
    crl_file: str | None,
    pid_file: str | None,
) -> None:
    """Write mosquitto.conf into DIRECTORY, and dynamic-security.json when it is missing.

    The accounts file holds the admin account (AMPFLEET_BROKER_ADMIN_USER) and the service
    account with their passwords (settings, or the generated ones in the data directory),
    hashed. Mosquitto owns it from its first start: it is never overwritten.
    """
    from broker.mosquitto.config import MosquittoConfig, initial_dynsec, render, write_dynsec
    from cloud.devicelink.accounts import admin_password, service_password

    settings = load_settings()
    dynsec_file = Path(data_dir) / "dynamic-security.json"
    config = MosquittoConfig(
        dynsec_file=str(dynsec_file),
        persistence_dir=data_dir,
        port=port,
        tls_port=tls_port,
        certfile=certfile if tls_port or mtls_port else "",
        keyfile=keyfile if tls_port or mtls_port else "",
        max_packet_size=settings.max_payload_bytes + 1024,  # payload + topic and headers
        plugin=plugin,
        user=user,
        mtls_port=mtls_port,
        client_ca_file=client_ca_file or settings.pki_ca_file,
        crl_file=crl_file or settings.pki_crl_file,
        pid_file=pid_file or "",
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mosquitto.conf").write_text(render(config))
    click.echo(f"wrote {directory / 'mosquitto.conf'}")
    target = directory / "dynamic-security.json"
    if target.exists():
        click.echo(f"kept {target} (Mosquitto owns it)")
        return
    document = initial_dynsec(
        settings.broker_admin_user,
        admin_password(settings),
        settings.broker_service_user,
        service_password(settings),
    )
    write_dynsec(target, document)
    click.echo(f"wrote {target}: mount it as {dynsec_file}, writable by Mosquitto")


@broker.command("crl-reload")
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Mosquitto's pid_file (`ampfleet broker mosquitto-config --pid-file`).",
)
@click.option(
    "--crl-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The CRL file Mosquitto reads (default: AMPFLEET_PKI_CRL_FILE).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between looks at the file.",
)
def crl_reload(pid_file: Path, crl_file: Path | None, interval: float) -> None:
    """Send Mosquitto SIGHUP whenever the platform's CRL file changes, until stopped.

    Mosquitto 2.0 reads its crlfile only at start and on SIGHUP: without this, a revoked
    certificate passes the TLS handshake until the broker restarts (docs/mutual-tls.md). Run
    it where Mosquitto's process can be signalled (same host or PID namespace). Signals once at
    start too, for a change made while it was not running.
    """
    from broker.mosquitto.crl_reload import CrlWatcher, signal_pid_file

    settings = load_settings()
    watcher = CrlWatcher(
        crl_file or Path(settings.pki_crl_file), signal_pid_file(pid_file), interval
    )
    click.echo(f"watching {watcher.crl_file}: SIGHUP to the process in {pid_file}")
    # Mosquitto read the file at its start; a change made while no watcher ran (this sidecar
    # restarting on its own) would wait for the next one. So one SIGHUP now: it costs little.
    try:
        watcher.reload()
        click.echo("told Mosquitto to re-read the CRL once at start")
    except (OSError, ValueError) as exc:  # no broker yet: the watching below retries
        click.echo(f"could not signal Mosquitto at start: {exc}", err=True)
    watcher.run()


@broker.command("tls-files")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--name",
    "names",
    multiple=True,
    required=True,
    help="Host name or IP address devices use to reach the broker (repeatable; the first is "
    "the certificate's common name).",
)
def tls_files(directory: Path, names: tuple[str, ...]) -> None:
    """Create a private CA and the broker's server certificate in DIRECTORY when missing.

    Writes ca.pem, ca.key, server.pem and server.key; existing files are kept, so running it
    on every start never changes what devices trust. Give devices ca.pem.
    """
    from broker.mosquitto.tls import ensure_tls_files

    _, created = ensure_tls_files(directory, [n for n in names if n.strip()])
    for path in created:
        click.echo(f"wrote {path}")
    if not created:
        click.echo(f"kept the CA and server certificate in {directory}")
