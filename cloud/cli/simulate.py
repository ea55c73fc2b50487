"""``ampfleet simulate``: a fleet of simulated chargers, running the real firmware, against the
platform's broker.

The chargers are registered in the records like real ones (an organization ``simulated``,
devices ``<prefix>-00001``...), get MQTT credentials the same way (argon2id hash in the
registry, pushed to the broker), and keep their passwords in ``<data_dir>/simulator/fleet.json``
(mode 0600) so that the next run reuses them. Enrolment costs one password hash per new
device (about 0.1 s with the default KDF profile); for a load test of many thousands, provision
the broker directly as ``scripts/bench_fleet.py`` does.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
from sqlalchemy import select

from cloud.cli.common import load_settings
from cloud.settings import Settings

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
def simulate(
    devices: int, family: str, prefix: str, duration: float, boot_rate: float, idle_mean: float
) -> None:
    """Run DEVICES simulated chargers (real firmware core, simulated hardware and EVs) against
    the configured broker, registering them first; a status line shows the fleet."""
    settings = load_settings()
    if not settings.device_passwords:
        # The simulated chargers log in with passwords; a resync would strip them otherwise.
        raise click.ClickException(
            "the simulated chargers log in with MQTT passwords, which are off "
            "(AMPFLEET_BROKER_DEVICE_PASSWORDS): set it to true to simulate"
        )
    fleet_devices = enroll(settings, devices, prefix, family)
    asyncio.run(_run(settings, fleet_devices, family, duration, boot_rate, idle_mean))


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
    devices: list[tuple[str, str]],
    family: str,
    duration: float,
    boot_rate: float,
    idle_mean: float,
) -> None:
    from firmware.host.fleet import Fleet, FleetStats

    parts = urlsplit(settings.broker_url)
    context: ssl.SSLContext | None = None
    if parts.scheme == "mqtts":
        context = ssl.create_default_context(cafile=settings.broker_tls_ca_file or None)
    fleet = Fleet(
        devices,
        parts.hostname or "127.0.0.1",
        parts.port or (8883 if context else 1883),
        family=family,
        context=context,
        boot_rate=boot_rate,
        idle_mean_s=idle_mean,
    )
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

    click.echo(f"simulating {len(devices)} chargers on {settings.broker_url}", err=True)
    await fleet.run(stop, progress)
    if tty:
        click.echo(err=True)


def fleet_file(settings: Settings) -> Path:
    """Where the simulated chargers' passwords are kept."""
    return settings.data_path / "simulator" / "fleet.json"
