"""Fleet benchmark: N simulated chargers (the real firmware core) in one process -> Mosquitto.

Starts its own Mosquitto (the project's configuration: dynamic security, per-device ACLs) on a
free port with N device accounts (seeded into its dynamic-security file, then checked by a
provisioner resync), then runs ``firmware.host.fleet``
with all N chargers in this process: they power up at ``--boot-rate`` per second, connect with
their own credentials, and report (and charge EVs) for ``--duration`` seconds once all are up.
Prints: time until all were connected, how many stayed connected and how many reported during
the steady window, telemetry messages/s, the fleet process's CPU and memory per charger, and
Mosquitto's memory. Run: .venv/bin/python scripts/bench_fleet.py --help. The figures of the latest
run are in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.admin import DeviceAccount
from broker.mosquitto.config import seed_devices, write_dynsec
from firmware.host.fleet import Fleet, FleetStats
from tests.services.mosquitto import Mosquitto


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, from /proc."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def line(text: str) -> None:
    """A status line on stderr, redrawn in place on a terminal."""
    if sys.stderr.isatty():
        print("\r" + text.ljust(100), end="", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Window:
    """The steady state: from the moment every charger is connected."""

    began: float
    cpu: float
    telemetry: int
    per_device: list[int]
    min_connected: int


async def measure(fleet: Fleet, duration: float, devices: int) -> None:
    stop = asyncio.Event()
    began = time.monotonic()
    window: Window | None = None

    def progress(stats: FleetStats) -> None:
        nonlocal window
        now = time.monotonic()
        line(
            f"  {now - began:5.0f} s  booted {stats.started}/{devices}  connected "
            f"{stats.connected}  telemetry {stats.telemetry}  EV sessions {stats.sessions}"
        )
        if window is None and stats.connected == devices:
            per_device = [t.telemetry for t in fleet.transports]
            window = Window(now, cpu_seconds(), stats.telemetry, per_device, devices)
            asyncio.get_running_loop().call_later(duration, stop.set)
        elif window is not None:
            window.min_connected = min(window.min_connected, stats.connected)

    base_rss = rss_bytes()
    await fleet.run(stop, progress)  # returns once ``duration`` s of steady state have passed
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if window is None:
        print("not every charger connected; nothing measured")
        return
    steady = time.monotonic() - window.began
    pairs = zip(fleet.transports, window.per_device, strict=True)
    reported = sum(1 for transport, before in pairs if transport.telemetry > before)
    sent = sum(t.telemetry for t in fleet.transports) - window.telemetry
    cpu = cpu_seconds() - window.cpu
    print(f"all {devices} connected {window.began - began:.1f} s after the first boot")
    print(
        f"steady window {steady:.0f} s: at least {window.min_connected} connected at every"
        f" tick, {reported} reported telemetry, {sent / steady:,.0f} telemetry messages/s,"
        f" {fleet.stats.sessions} EV sessions started"
    )
    print(
        f"fleet process: {cpu / steady:.2f} cores, {(rss_bytes() - base_rss) / devices / 1024:.1f}"
        f" KiB per charger (RSS growth over the run / chargers)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000, help="simulated chargers")
    parser.add_argument("--duration", type=float, default=120, help="steady seconds measured")
    parser.add_argument("--boot-rate", type=float, default=500, help="chargers started per s")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {args.devices} chargers (ac22-3p), boot rate {args.boot_rate:.0f}/s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        server = Mosquitto(Path(tmp) / "mosquitto")  # not started yet: seeded first
        try:
            devices = [(f"sim-{i:05d}", secrets.token_urlsafe(16)) for i in range(args.devices)]
            started = time.monotonic()
            # One write of the dynamic-security file (seed_devices says why not N commands).
            document = json.loads(server.dynsec_file.read_text())
            accounts = [DeviceAccount(d, "1", True, p) for d, p in devices]
            write_dynsec(server.dynsec_file, seed_devices(document, accounts))
            server.start()
            report = server.provisioner(timeout=60).resync(accounts)
            assert not (report.created or report.updated), "the seeded accounts are complete"
            print(f"provisioned {len(devices)} devices in {time.monotonic() - started:.1f} s")
            fleet = Fleet(devices, server.host, server.port, boot_rate=args.boot_rate)
            asyncio.run(measure(fleet, args.duration, args.devices))
            if server.pid is not None:
                print(f"mosquitto: {rss_bytes(server.pid) / 1024 / 1024:.0f} MiB resident")
        finally:
            server.close()


if __name__ == "__main__":
    main()
