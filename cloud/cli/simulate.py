"""``ampfleet simulate``: a fleet of simulated chargers, running the real firmware, against the
platform's broker.

The chargers are registered in the records like real ones (an organization ``simulated``,
devices ``<prefix>-00001``...), get MQTT credentials the same way (argon2id hash in the
registry, pushed to the broker), and keep their passwords in ``<data_dir>/simulator/fleet.json``
(mode 0600) so that the next run reuses them. Enrolment costs one password hash per new
device (about 0.1 s with the default KDF profile); for a load test of many thousands, provision
the broker directly as ``scripts/bench_fleet.py`` does.

With ``--board`` the chargers are enrolled simulated boards instead (``ampfleet factory enroll
--simulated-board DIR``): nothing is registered, each connects over mutual TLS with the key and
certificate its board holds (``firmware.host.boards``) and renews that certificate over the
device contract when it nears expiry.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click
from sqlalchemy import select

from cloud.cli.common import load_settings
from cloud.settings import Settings

if TYPE_CHECKING:
    from firmware.host.boards import BoardIdentity
    from firmware.host.fleet import Fleet

ORGANIZATION = "simulated"


@click.command("simulate")
@click.option("--devices", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--family", default="ac22-3p", show_default=True, help="Hardware family.")
@click.option("--prefix", default="sim", show_default=True, help="Device id prefix.")
@click.option(
    "--duration", type=click.FloatRange(0), default=0, help="Seconds to run (0: until Ctrl-C)."
)
@click.option(
    "--boot-rate",
    type=click.FloatRange(1),
    default=200.0,
    show_default=True,
    help="Chargers powered up per second (a fleet never reconnects all at once).",
)
@click.option(
    "--idle-mean",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Mean seconds between an EV leaving and the next arriving, per charger.",
)
@click.option(
    "--board",
    "boards",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An enrolled simulated board directory, or a directory of them: run those chargers "
    "over mutual TLS with their own key and certificate instead of registering --devices. "
    "Repeat for more.",
)
@click.option(
    "--broker-url",
    metavar="URL",
    help="Broker to connect to, e.g. mqtts://127.0.0.1:8883 (default AMPFLEET_BROKER_URL).",
)
@click.option(
    "--server-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="CA file the broker's server certificate is checked against (default "
    "AMPFLEET_BROKER_TLS_CA_FILE; with --board and neither, the CA chain in the board's NVS).",
)
def simulate(
    devices: int,
    family: str,
    prefix: str,
    duration: float,
    boot_rate: float,
    idle_mean: float,
    boards: tuple[Path, ...],
    broker_url: str | None,
    server_ca: str | None,
) -> None:
    """Run DEVICES simulated chargers (real firmware core, simulated hardware and EVs) against
    the configured broker, registering them first; a status line shows the fleet."""
    settings = load_settings()
    url = broker_url or settings.broker_url
    ca_file = server_ca or settings.broker_tls_ca_file or None
    if boards:
        from firmware.host.boards import load_boards
        from firmware.tools import ToolError

        try:
            found = load_boards(boards)
        except ToolError as exc:
            raise click.ClickException(str(exc)) from exc
        if urlsplit(url).scheme != "mqtts":
            raise click.UsageError(f"--board connects over mutual TLS: {url} is not mqtts://")
        asyncio.run(_run_boards(url, ca_file, found, family, duration, boot_rate, idle_mean))
        return
    if not settings.device_passwords:
        # The simulated chargers log in with passwords; a resync would strip them otherwise.
        raise click.ClickException(
            "the simulated chargers log in with MQTT passwords, which are off "
            "(AMPFLEET_BROKER_DEVICE_PASSWORDS): set it to true to simulate, or run enrolled "
            "simulated boards over mutual TLS with --board"
        )
    fleet_devices = enroll(settings, devices, prefix, family)
    asyncio.run(_run(settings, url, ca_file, fleet_devices, family, duration, boot_rate, idle_mean))


def enroll(settings: Settings, count: int, prefix: str, family: str) -> list[tuple[str, str]]:
    """``count`` devices registered with usable credentials: (device id, password)."""
    from broker.admin import broker_admin
    from cloud.db import Database, utcnow
    from cloud.devices.credentials import DeviceCredential, new_password
    from cloud.devices.models import Device, LifecycleState, Protocol
    from cloud.identity.passwords import SecretHasher
    from cloud.organizations.models import Organization

    store = fleet_file(settings)
    known: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
    wanted = [f"{prefix}-{n:05d}" for n in range(1, count + 1)]
    database = Database(settings.database_url)
    hasher = SecretHasher(settings.password_kdf)
    issued: list[tuple[str, str, str]] = []  # (device id, password, credential version)
    with database.transaction() as session:
        organization = session.scalar(select(Organization).where(Organization.slug == ORGANIZATION))
        if organization is None:
            organization = Organization(slug=ORGANIZATION, name="Simulated fleet")
            session.add(organization)
            session.flush()
        devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(wanted)))}
        credentials = {
            c.device_id: c
            for c in session.scalars(
                select(DeviceCredential).where(DeviceCredential.device_id.in_(wanted))
            )
        }
        for device_id in wanted:
            if device_id not in devices:
                session.add(
                    Device(
                        id=device_id,
                        serial=device_id.upper(),
                        name=f"Simulated charger {device_id}",
                        hardware_family=family,
                        protocol=Protocol.NATIVE,
                        state=LifecycleState.ACTIVE,
                        organization_id=organization.id,
                        # Registered by the operator who runs the simulation: approved by it.
                        approved_at=utcnow(),
                        approved_by="system:simulate",
                    )
                )
        session.flush()  # the devices before their credentials (foreign key)
        with click.progressbar(wanted, label="credentials", file=sys.stderr) as bar:
            for device_id in bar:
                credential = credentials.get(device_id)
                if credential is not None and credential.revoked_at is None and device_id in known:
                    continue  # its password is ours already
                password = new_password()
                if credential is None:
                    credential = DeviceCredential(
                        device_id=device_id, secret_hash=hasher.hash(password)
                    )
                    session.add(credential)
                else:
                    credential.secret_hash = hasher.hash(password)
                    credential.revoked_at = None
                known[device_id] = password
                issued.append((device_id, password, credential.version))
    database.engine.dispose()
    store.parent.mkdir(parents=True, exist_ok=True)
    store.touch(mode=0o600)
    store.write_text(json.dumps(known, indent=0, sort_keys=True))
    if issued:
        admin = broker_admin(settings)
        for device_id, password, version in issued:
            admin.upsert_device(device_id, password, version=version, enabled=True)
    click.echo(f"{count} simulated chargers enrolled ({len(issued)} new credentials)", err=True)
    return [(device_id, known[device_id]) for device_id in wanted]


async def _run(
    settings: Settings,
    url: str,
    ca_file: str | None,
    devices: list[tuple[str, str]],
    family: str,
    duration: float,
    boot_rate: float,
    idle_mean: float,
) -> None:
    from firmware.host.fleet import Fleet

    parts = urlsplit(url)
    context: ssl.SSLContext | None = None
    if parts.scheme == "mqtts":
        context = ssl.create_default_context(cafile=ca_file)
    fleet = Fleet(
        list(devices),
        parts.hostname or "127.0.0.1",
        parts.port or (8883 if context else 1883),
        family=family,
        context=context,
        boot_rate=boot_rate,
        idle_mean_s=idle_mean,
    )
    await _drive(fleet, url, duration)


async def _run_boards(
    url: str,
    ca_file: str | None,
    boards: list[BoardIdentity],
    family: str,
    duration: float,
    boot_rate: float,
    idle_mean: float,
) -> None:
    from firmware.host.fleet import Fleet

    parts = urlsplit(url)
    fleet = Fleet.from_boards(
        boards,
        parts.hostname or "127.0.0.1",
        parts.port or 8883,
        server_ca_file=ca_file,
        family=family,
        boot_rate=boot_rate,
        idle_mean_s=idle_mean,
    )
    await _drive(fleet, url, duration)
    from firmware.host.boards import save_board

    saved = [
        board.device_id
        for board, charger in zip(boards, fleet.chargers, strict=False)
        if save_board(board, charger.storage)
    ]
    if saved:
        click.echo(
            f"renewed certificates written back to the boards of {', '.join(saved)}", err=True
        )


async def _drive(fleet: Fleet, url: str, duration: float) -> None:
    from firmware.host.fleet import FleetStats

    devices = fleet.transports
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration:
        loop.call_later(duration, stop.set)
    shown = [0.0]
    tty = sys.stderr.isatty()

    def progress(stats: FleetStats) -> None:
        now = time.monotonic()
        if now - shown[0] < (1 if tty else 30):
            return
        shown[0] = now
        line = (
            f"chargers {stats.started}/{stats.devices}  connected {stats.connected}  "
            f"telemetry sent {stats.telemetry}  EV sessions {stats.sessions}"
        )
        click.echo(("\r" + line) if tty else line, nl=not tty, err=True)

    click.echo(f"simulating {len(devices)} chargers on {url}", err=True)
    await fleet.run(stop, progress)
    if tty:
        click.echo(err=True)


def fleet_file(settings: Settings) -> Path:
    """Where the simulated chargers' passwords are kept."""
    return settings.data_path / "simulator" / "fleet.json"
