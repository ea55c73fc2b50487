"""Ingest benchmark: simulated chargers -> Mosquitto -> N ingest workers -> InfluxDB.

Starts its own Mosquitto (the project's configuration) and InfluxDB (Debian's influxd) on free
ports, provisions the devices through the dynamic-security provisioner and registers them as
ac22-3p chargers in a registry the workers read (so every value is checked against the
family's schema, as in production), then, for each worker count:

1. the workers alone: samples queued at the broker for the workers' stopped persistent
   sessions, then the workers started and timed until everything is in InfluxDB;
2. end to end: publisher processes send as fast as the broker takes QoS 1 while the workers
   share the subscription ($share/ingest/...): samples/s from the first publish to the last
   sample stored, loss (published - stored) and lag (last stored - last published).

Each run prints the wall-clock rate and the workers' CPU time per sample; on a machine where
publishers, Mosquitto, InfluxDB and the workers share the cores, CPU per sample is what tells
what one worker sustains on a core of its own. Every sample carries ten values, like a
charger's meter. Run: .venv/bin/python scripts/bench_ingest.py --help. The figures of the
latest run are in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import multiprocessing
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt

from broker.admin import DeviceAccount
from cloud.db import Database, migrate, utcnow
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.devices.models import Device, LifecycleState, Protocol
from cloud.organizations.models import Organization
from cloud.telemetry.influx import InfluxStore
from firmware.core import contract
from scripts.progress import progress
from tests.services.influxd import Influxd
from tests.services.mosquitto import Mosquitto, free_port

AMPFLEET = str(Path(sys.executable).parent / "ampfleet")


def publish(
    host: str, port: int, devices: list[tuple[str, str]], count: int, done: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    """One publisher process: its devices take turns publishing ``count`` samples in all."""
    clients = []
    for device_id, password in devices:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device_id)
        client.username_pw_set(device_id, password)
        client.max_inflight_messages_set(200)
        client.connect(host, port, keepalive=60)
        client.loop_start()
        clients.append((device_id, client))
    time.sleep(0.5)
    base_ts = int(time.time() * 1000) - count  # distinct timestamps per device, in the past
    infos = []
    for n in range(count):
        device_id, client = clients[n % len(clients)]
        values = {  # one reading of an ac22-3p's meter: ten values, valid under its schema
            "power_w": 7000.0 + n % 400,
            "energy_wh": float(n),
            "current_l1_a": 10.5,
            "current_l2_a": 10.1,
            "current_l3_a": 10.2,
            "voltage_l1_v": 230.0 + n % 3,
            "voltage_l2_v": 229.5,
            "voltage_l3_v": 231.0,
            "frequency_hz": 50.01,
            "power_factor": 0.98,
        }
        payload = contract.encode_telemetry(base_ts + n, n, values, node="meter")
        infos.append(client.publish(contract.topic(device_id, contract.TELEMETRY), payload, 1))
        if len(infos) >= 2000:
            for info in infos:
                info.wait_for_publish(30)
            infos.clear()
    for info in infos:
        info.wait_for_publish(30)
    done.put(time.time())
    for _, client in clients:
        client.disconnect()
        client.loop_stop()


def run_publishers(
    server: Mosquitto, devices: list[tuple[str, str]], total: int, processes: int
) -> tuple[float, float]:
    """Publish ``total`` samples from ``processes`` processes; (first start, last end)."""
    done: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    share = len(devices) // processes
    started = time.time()
    procs = [
        multiprocessing.Process(
            target=publish,
            args=(
                server.host,
                server.port,
                devices[i * share : (i + 1) * share],
                total // processes,
                done,
            ),
        )
        for i in range(processes)
    ]
    for proc in procs:
        proc.start()
    ends = [done.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    return started, max(ends)


def make_registry(path: Path, device_ids: list[str]) -> str:
    """A device registry (SQLite) holding the devices as ac22-3p chargers: the workers look
    each device's family up there and check every value against its schema, as in production."""
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    database = Database(url)
    with database.transaction() as session:
        organization = Organization(slug="bench", name="Benchmark")
        session.add(organization)
        session.flush()
        for device_id in device_ids:
            session.add(
                Device(
                    id=device_id,
                    serial=device_id,
                    hardware_family="ac22-3p",
                    protocol=Protocol.NATIVE,
                    state=LifecycleState.ACTIVE,
                    organization_id=organization.id,
                    approved_at=utcnow(),
                    approved_by="system:bench",
                )
            )
    database.engine.dispose()
    return url


METRICS_PORTS: dict[int, int] = {}  # worker pid -> its /metrics port


def written(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    """Samples each worker wrote, from its /metrics: how evenly the shared subscription split."""
    counts = []
    for worker in workers:
        url = f"http://127.0.0.1:{METRICS_PORTS[worker.pid]}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        lines = [
            line for line in text.splitlines() if line.startswith("ampfleet_samples_written_total ")
        ]
        counts.append(int(float(lines[0].split()[-1])) if lines else 0)
    return counts


def start_workers(
    server: Mosquitto,
    influx_url: str,
    database: str,
    data_dir: Path,
    count: int,
    registry_url: str,
) -> list[subprocess.Popen[bytes]]:
    """``count`` `ampfleet worker ingest` processes with stable client ids."""
    workers = []
    for index in range(count):
        env = {
            **os.environ,
            "AMPFLEET_DATA_DIR": str(data_dir / f"w{index}"),
            "AMPFLEET_BROKER": "external",
            "AMPFLEET_BROKER_URL": server.url,
            "AMPFLEET_BROKER_SERVICE_USER": server.service_user,
            "AMPFLEET_BROKER_SERVICE_PASSWORD": server.service_password,
            "AMPFLEET_TELEMETRY_STORE": "influxdb",
            "AMPFLEET_INFLUXDB_URL": influx_url,
            "AMPFLEET_INFLUXDB_API": "v1",
            "AMPFLEET_INFLUXDB_BUCKET": database,
            "AMPFLEET_DATABASE_URL": registry_url,
            "AMPFLEET_LOG_LEVEL": "WARNING",
        }
        args = [
            AMPFLEET,
            "worker",
            "ingest",
            "--client-id",
            f"bench-ingest-{index}",
            "--metrics-port",
            str(port := free_port()),
        ]
        workers.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL))
        METRICS_PORTS[workers[-1].pid] = port
    time.sleep(2.0)  # connected and subscribed
    return workers


def cpu_seconds(workers: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU the worker processes used so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for worker in workers:
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM and wait: workers flush and acknowledge what they hold."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(60)


def forget(server: Mosquitto, count: int) -> None:
    """End the workers' broker sessions, which would otherwise keep their share of the
    shared subscription (and its traffic) in the next phase."""
    endpoint = Endpoint(
        server.host, server.port, False, server.service_user, server.service_password
    )
    for index in range(count):
        end_session(endpoint, f"bench-ingest-{index}")


@dataclasses.dataclass
class Mark:
    """The store's count at one moment, with the workers' CPU seconds then."""

    at: float
    stored: int
    cpu: float


def wait_stored(
    store: InfluxStore,
    expected: int,
    label: str,
    cpu: Callable[[], float],
    timeout: float = 600,
) -> tuple[Mark, Mark]:
    """Poll the store until ``expected`` samples are in (or nothing moves for 30 s): the first
    moment it held any, and the moment of the last change."""
    deadline = time.time() + timeout
    first: Mark | None = None
    last = Mark(time.time(), 0, cpu())
    while time.time() < deadline:
        stored = store.count()
        progress(min(stored, expected), expected, label)
        if stored != last.stored:
            last = Mark(time.time(), stored, cpu())
            first = first or last
        if stored >= expected or time.time() - last.at > 30:
            break
        time.sleep(0.05)
    return first or last, last


def report(
    label: str, samples: int, expected: int, stored: int, seconds: float, cpu: float
) -> None:
    """One line of figures: wall-clock rate, loss, and what the workers' CPU time per sample
    says one worker sustains on a core of its own (here everything shares two cores)."""
    per_sample = cpu / max(samples, 1)
    print(
        f"{label}: {samples / seconds:,.0f} samples/s wall clock, loss {expected - stored};"
        f" worker CPU {1e6 * per_sample:.1f} µs per sample = {1 / max(per_sample, 1e-9):,.0f}"
        f" samples/s per worker on a core of its own ({cpu / seconds:.2f} cores busy)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100, help="simulated chargers")
    parser.add_argument("--messages", type=int, default=100_000, help="samples per run")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    args = parser.parse_args()

    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {args.devices} devices, {args.messages} samples of "
        "10 values per run"
    )
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp_path = Path(tmp)
        with Influxd() as influxd, Mosquitto(tmp_path / "mosquitto") as server:
            server.start()
            devices = [(f"bench-{i:05d}", secrets.token_urlsafe(16)) for i in range(args.devices)]
            provisioner = server.provisioner(timeout=30)
            provisioner.resync([DeviceAccount(d, "1", True, p) for d, p in devices])
            print(f"provisioned {len(devices)} devices in Mosquitto")

            registry_url = make_registry(tmp_path / "registry.db", [d for d, _ in devices])
            counts = [int(c) for c in args.workers.split(",")]

            # 1. The workers alone: a backlog waits at the broker for their persistent sessions
            # (made by starting and stopping them once), then they drain it.
            for count in counts:
                database = f"bench_alone_{count}"
                store = InfluxStore(influxd.url, database, api="v1")
                workers = start_workers(
                    server, influxd.url, database, tmp_path, count, registry_url
                )
                stop(workers)
                run_publishers(server, devices, args.messages, args.publishers)
                workers = start_workers(
                    server, influxd.url, database, tmp_path, count, registry_url
                )
                first, last = wait_stored(
                    store,
                    args.messages,
                    f"{count} worker(s) alone",
                    functools.partial(cpu_seconds, workers),
                )
                split = written(workers)
                stop(workers)
                forget(server, count)
                # From the first sample stored to the last: the workers' start-up is left out.
                report(
                    f"{count} worker(s) alone",
                    last.stored - first.stored,
                    args.messages,
                    store.count(),
                    last.at - first.at,
                    last.cpu - first.cpu,
                )
                print(f"  samples written per worker: {split}")

            # 2. End to end with 1..N workers sharing the subscription.
            for count in counts:
                database = f"bench_e2e_{count}"
                store = InfluxStore(influxd.url, database, api="v1")
                workers = start_workers(
                    server, influxd.url, database, tmp_path, count, registry_url
                )
                cpu_before = cpu_seconds(workers)
                began, last_published = run_publishers(
                    server, devices, args.messages, args.publishers
                )
                _, last = wait_stored(
                    store,
                    args.messages,
                    f"end to end, {count} worker",
                    functools.partial(cpu_seconds, workers),
                )
                split = written(workers)
                stop(workers)
                forget(server, count)
                stored = store.count()
                report(
                    f"end to end, {count} worker(s)",
                    last.stored,
                    args.messages,
                    stored,
                    last.at - began,
                    last.cpu - cpu_before,
                )
                print(
                    f"  lag {last.at - last_published:.1f} s after the last publish (publishing"
                    f" took {last_published - began:.1f} s); samples written per worker: {split}"
                )


if __name__ == "__main__":
    main()
