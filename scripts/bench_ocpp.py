"""OCPP bridge benchmark: connected chargers per bridge process, and MeterValues per second with
schema validation on.

Starts Mosquitto (the project's configuration, with the bridge's account), a SQLite registry of
N OCPP chargers (protocol ocpp, family ocpp-generic, each with a Basic-auth credential), and
`ampfleet worker ocpp` as a process of its own (security profile 1, validation on, pings every
30 s). Load-generator processes then

1. connect N chargers (subprotocol ocpp1.6, HTTP Basic auth; each sends a BootNotification)
   and hold them: the figure is how many the one bridge process holds, its memory and how
   long the connection storm took;
2. make C of them send MeterValues (a 1.6 meter reading of six sampled values, as a charger
   sends during a session) as fast as the bridge answers, one call outstanding per charger as
   OCPP demands, for D seconds: CallResults per second, and the bridge's CPU seconds per
   message (on this 2-core machine the generators and Mosquitto share the cores with the
   bridge, so messages per bridge-CPU-second is what one bridge sustains on a core of its own),
   split into user and kernel time, and the MQTT packets per write to the broker.

The generators run on uvloop, build each frame's JSON once per second and check an answer's
type without parsing it: whatever they spend is a core the bridge does not get.
A subscriber counts the telemetry messages the bridge publishes, to check that every answered
MeterValues reached the broker. ``--profile FILE`` also samples the bridge process during the
MeterValues phase (py-spy, when installed: ``pip install py-spy``; else cProfile over the whole
run) and prints where its time went. Run: .venv/bin/python scripts/bench_ocpp.py --help. The
figures of the latest run are in docs/ocpp.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import websockets
from sqlalchemy import insert

from broker.mosquitto.provisioner import MosquittoProvisioner
from cloud.db import Database, migrate, utcnow
from cloud.devices.credentials import DeviceCredential
from cloud.devices.models import Device, LifecycleState, Protocol
from cloud.identity.passwords import SecretHasher
from cloud.organizations.models import Organization
from tests.services.mosquitto import Mosquitto, free_port

AMPFLEET = str(Path(sys.executable).parent / "ampfleet")
PASSWORD = "bench-" + "x" * 34  # 40 characters: the longest OCPP Basic-auth password
BRIDGE_USER = "ampfleet-ocpp-bridge"


def line(text: str) -> None:
    print(text, flush=True)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def system_cpu(pid: int) -> float:
    """CPU seconds a process spent in the kernel (system calls: sends, receives)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def register(database_url: str, count: int) -> list[str]:
    """N OCPP chargers with one credential each (the test KDF: registration is not measured)."""
    migrate.upgrade(database_url)
    database = Database(database_url)
    secret_hash = SecretHasher("insecure-fast-for-tests").hash(PASSWORD)
    ids = [f"bench-cp-{n:05d}" for n in range(count)]
    with database.transaction() as session:
        org = Organization(slug="bench", name="Bench")
        session.add(org)
        session.flush()
        session.execute(
            insert(Device),
            [
                {
                    "id": i,
                    "serial": i,
                    "name": "",
                    "hardware_family": "ocpp-generic",
                    "protocol": Protocol.OCPP,
                    "state": LifecycleState.ACTIVE,
                    "organization_id": org.id,
                    "approved_at": utcnow(),
                    "approved_by": "system:bench",
                }
                for i in ids
            ],
        )
        session.execute(
            insert(DeviceCredential), [{"device_id": i, "secret_hash": secret_hash} for i in ids]
        )
    return ids


def now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


SAMPLES = [
    {"value": "12345.6", "unit": "Wh", "measurand": "Energy.Active.Import.Register"},
    {"value": "7360.5", "unit": "W", "measurand": "Power.Active.Import"},
    {"value": "16.0", "unit": "A", "measurand": "Current.Import", "phase": "L1"},
    {"value": "230.1", "unit": "V", "measurand": "Voltage", "phase": "L1-N"},
    {"value": "35.5", "unit": "Celsius", "measurand": "Temperature", "location": "Body"},
    {"value": "50.0", "measurand": "Frequency"},
]


class MeterFrames:
    """MeterValues frames of one transaction: a unique message id each, the current time (to
    the second, as chargers stamp them). The payload's JSON is made once per second, so that
    the generator spends its core on the connections, not on building the same text."""

    def __init__(self, transaction_id: int) -> None:
        self.transaction_id = transaction_id
        self.count = 0
        self._second = ""
        self._body = ""

    def next(self) -> str:
        ts = now_text()
        if ts != self._second:
            payload = {
                "connectorId": 1,
                "transactionId": self.transaction_id,
                "meterValue": [{"timestamp": ts, "sampledValue": SAMPLES}],
            }
            self._second, self._body = ts, json.dumps(payload)
        self.count += 1
        return f'[2,"m{self.count}","MeterValues",{self._body}]'


async def _call(connection: Any, frame: str) -> Any:
    await connection.send(frame)
    answer = json.loads(await connection.recv())
    if answer[0] != 3:
        raise RuntimeError(f"CallError: {answer}")
    return answer[2]


async def _call_ok(connection: Any, frame: str) -> bool:
    """Send a call; True when a CallResult came back (its payload is not needed)."""
    await connection.send(frame)
    answer = await connection.recv()
    return isinstance(answer, str) and answer.startswith("[3,")


def generator(
    url: str,
    ids: list[str],
    meter_ids: set[str],
    go: Any,
    stop: Any,
    results: Any,
) -> None:
    """One load-generator process: connect its chargers, then (on ``go``) send MeterValues from
    those in ``meter_ids`` until ``stop``; report counts through ``results``."""
    raise_fd_limit()

    async def one(charger_id: str, connected: list[Any]) -> None:
        token = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
        connection = await websockets.connect(
            f"{url}/ocpp/{charger_id}",
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Basic {token}"},
            compression=None,
            open_timeout=120,
            ping_interval=None,
        )
        boot = {"chargePointVendor": "Bench", "chargePointModel": "B1"}
        await _call(connection, json.dumps([2, "b", "BootNotification", boot]))
        connected.append((charger_id, connection))

    async def main() -> None:
        connected: list[Any] = []
        started = time.monotonic()
        pending = [one(i, connected) for i in ids]
        failures = 0
        for start in range(0, len(pending), 200):  # a storm, in waves the kernel backlog takes
            outcome = await asyncio.gather(*pending[start : start + 200], return_exceptions=True)
            failures += sum(isinstance(o, BaseException) for o in outcome)
        results.put(("connected", len(connected), failures, time.monotonic() - started))
        while not go.is_set():
            await asyncio.sleep(0.05)
        sent = 0
        errors = 0
        running = True

        async def meter(connection: Any) -> None:
            nonlocal sent, errors
            start_tx = {"connectorId": 1, "idTag": "B", "meterStart": 0, "timestamp": now_text()}
            tx = await _call(connection, json.dumps([2, "s", "StartTransaction", start_tx]))
            frames = MeterFrames(tx["transactionId"])
            while running:
                if await _call_ok(connection, frames.next()):
                    sent += 1
                else:
                    errors += 1

        async def watch() -> None:
            # The other process's event is a lock and a semaphore: read it 20 times a
            # second, not once per message.
            nonlocal running
            while not stop.is_set():
                await asyncio.sleep(0.05)
            running = False

        begun = time.monotonic()
        watching = asyncio.create_task(watch())
        await asyncio.gather(*(meter(c) for i, c in connected if i in meter_ids))
        await watching
        results.put(("metered", sent, errors, time.monotonic() - begun))
        await asyncio.gather(*(c.close() for _, c in connected), return_exceptions=True)

    # The generator's own loop: the cheaper it is, the more of the machine the bridge gets.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


class TelemetryCounter:
    """Counts the telemetry messages the bridge publishes (as the service account)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.count = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.username_pw_set(broker.service_user, broker.service_password)
        self.client.on_message = self._message
        ready = threading.Event()
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_connect = lambda c, *_: c.subscribe("af/+/telemetry", 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        ready.wait(10)

    def _message(self, *_: Any) -> None:
        self.count += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for text in answer.read().decode().splitlines():
            if text.startswith(name + " "):
                return float(text.split()[1])
    return None


# The bridge under cProfile (``--profile`` without py-spy): its loop runs in a thread of its
# own, which a profiler enabled in the main thread would not see.
_CPROFILED_BRIDGE = """
import cProfile, sys
from cloud.ocpp import worker
from cloud.cli import main
run = worker.OcppWorker._main
out = sys.argv.pop(1)
def profiled(self):
    profile = cProfile.Profile()
    profile.enable()
    try:
        run(self)
    finally:
        profile.disable()
        profile.dump_stats(out)
worker.OcppWorker._main = profiled
sys.argv[0] = "ampfleet"
main()
"""


def summarize_pyspy(path: str, top: int = 25) -> None:
    """Print the functions where the sampled bridge spent its time (py-spy's raw format:
    one ``frame;frame;... count`` line per distinct stack). Only samples holding the GIL are
    taken: a thread waiting in a system call (or for a core, the generators being woken by
    each answer) is not using Python's time; the kernel's share is printed from /proc."""
    own: dict[str, int] = {}
    within: dict[str, int] = {}
    total = 0
    for text in Path(path).read_text().splitlines():
        stack, _, count_text = text.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            within[frame] = within.get(frame, 0) + count
    line(f"profile: {total} samples of the bridge holding the GIL ({path})")
    for title, table in (("self", own), ("inclusive", within)):
        line(f"  top {top} by {title} time:")
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            line(f"    {count / max(total, 1) * 100:5.1f}%  {frame[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--chargers", type=int, default=10_000, help="connected chargers")
    parser.add_argument("--metering", type=int, default=1_000, help="chargers sending MeterValues")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of MeterValues")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="sample the bridge while it meters: py-spy's raw stacks (or, without py-spy, "
        "cProfile stats of the whole run) to FILE, and a summary",
    )
    parser.add_argument(
        "--bridge-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra AMPFLEET_* setting of the bridge (e.g. AMPFLEET_OCPP_UVLOOP=false)",
    )
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    raise_fd_limit()
    line(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-ocpp-") as tmp,
        Mosquitto(Path(tmp) / "mosquitto") as broker,
    ):
        bridge_password = secrets.token_urlsafe(24)
        MosquittoProvisioner(
            broker.host,
            broker.port,
            admin_user=broker.admin_user,
            admin_password=broker.admin_password,
            service_user=broker.service_user,
            service_password=broker.service_password,
            bridge_user=BRIDGE_USER,
            bridge_password=bridge_password,
        ).resync([])
        database_url = f"sqlite:///{tmp}/ampfleet.db"
        ids = register(database_url, args.chargers)
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "AMPFLEET_DATA_DIR": tmp,
            "AMPFLEET_DATABASE_URL": database_url,
            "AMPFLEET_BROKER": "external",
            "AMPFLEET_BROKER_URL": broker.url,
            "AMPFLEET_BROKER_BRIDGE_USER": BRIDGE_USER,
            "AMPFLEET_BROKER_BRIDGE_PASSWORD": bridge_password,
            "AMPFLEET_OCPP_PORT": str(port),
            "AMPFLEET_OCPP_PING_INTERVAL": "30",
            "AMPFLEET_TESTING": "true",
            "AMPFLEET_PASSWORD_KDF": "insecure-fast-for-tests",
            "AMPFLEET_METRICS_PORT": str(metrics_port),
            "AMPFLEET_LOG_LEVEL": "WARNING",
        }
        env.update(item.split("=", 1) for item in args.bridge_env)
        command = [AMPFLEET, "worker", "ocpp", "--client-id", "bench-bridge"]
        if args.profile and not pyspy:
            command = [sys.executable, "-c", _CPROFILED_BRIDGE, args.profile, *command[1:]]
        line(f"bridge: {' '.join(command[-4:])}; {' '.join(args.bridge_env) or 'default settings'}")
        bridge = subprocess.Popen(
            command,
            env=env,
            preexec_fn=raise_fd_limit,  # only raises the fd limit
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if metric(metrics_port, "ampfleet_ocpp_chargers_connected") is not None:
                        break
                except OSError:
                    time.sleep(0.2)
            _, rss_idle = proc_stat(bridge.pid)
            counter = TelemetryCounter(broker)
            url = f"ws://127.0.0.1:{port}"
            go, stop = multiprocessing.Event(), multiprocessing.Event()
            results: Any = multiprocessing.Queue()
            shares = [ids[n :: args.generators] for n in range(args.generators)]
            meter_ids = set(ids[: args.metering])
            workers = [
                multiprocessing.Process(
                    target=generator, args=(url, share, meter_ids, go, stop, results)
                )
                for share in shares
            ]
            for process in workers:
                process.start()
            connected = failures = 0
            storm = 0.0
            for _ in workers:
                _, n, failed, took = results.get(timeout=600)
                connected, failures, storm = connected + n, failures + failed, max(storm, took)
            held = metric(metrics_port, "ampfleet_ocpp_chargers_connected")
            _, rss = proc_stat(bridge.pid)
            line(
                f"connections: {connected} connected ({failures} failed) in {storm:.1f} s; "
                f"the bridge holds {held:.0f}; bridge RSS {rss / 2**20:.0f} MiB "
                f"({(rss - rss_idle) / max(connected, 1) / 1024:.1f} KiB per charger)"
            )
            time.sleep(5)
            still = metric(metrics_port, "ampfleet_ocpp_chargers_connected")
            line(f"after 5 s idle: {still:.0f} still connected")
            cpu_before, _ = proc_stat(bridge.pid)
            system_before = system_cpu(bridge.pid)
            packets_before = metric(metrics_port, "ampfleet_ocpp_broker_packets_total") or 0.0
            writes_before = metric(metrics_port, "ampfleet_ocpp_broker_writes_total") or 0.0
            telemetry_before = counter.count
            go.set()
            spy = None
            if args.profile and pyspy:
                spy = subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(bridge.pid),
                        "--duration",
                        str(max(1, int(args.duration) - 2)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--function",
                        "--gil",
                        "--nonblocking",
                        "--output",
                        args.profile,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            time.sleep(args.duration)
            stop.set()
            cpu_after, _ = proc_stat(bridge.pid)
            system = system_cpu(bridge.pid) - system_before
            packets = (metric(metrics_port, "ampfleet_ocpp_broker_packets_total") or 0.0) - (
                packets_before
            )
            writes = (metric(metrics_port, "ampfleet_ocpp_broker_writes_total") or 0.0) - (
                writes_before
            )
            sent = errors = 0
            took = 0.0
            for _ in workers:
                _, n, failed, seconds = results.get(timeout=120)
                sent, errors, took = sent + n, errors + failed, max(took, seconds)
            for process in workers:
                process.join(timeout=120)
            time.sleep(1)
            telemetry = counter.count - telemetry_before
            counter.close()
            cpu = cpu_after - cpu_before
            line(
                f"MeterValues: {args.metering} chargers, {sent} answered ({errors} CallErrors) in "
                f"{took:.1f} s = {sent / took:,.0f} msg/s wall; bridge CPU {cpu:.1f} s = "
                f"{sent / cpu if cpu else 0:,.0f} msg per CPU-second "
                f"({cpu / took * 100:.0f}% of a core); telemetry published {telemetry}"
            )
            per = 1e6 / max(sent, 1)
            line(
                f"bridge CPU per message: {cpu * per:.0f} us = {(cpu - system) * per:.0f} us "
                f"in Python and libraries + {system * per:.0f} us in the kernel (system calls)"
            )
            line(
                f"broker link: {packets:,.0f} MQTT packets in {writes:,.0f} socket writes "
                f"({packets / max(writes, 1):.1f} per write)"
            )
            if spy is not None:
                spy.wait(60)
                summarize_pyspy(args.profile)
        finally:
            bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(30)
            except subprocess.TimeoutExpired:
                bridge.kill()
        if args.profile and not pyspy:
            import pstats

            line(f"profile: cProfile of the whole bridge run ({args.profile})")
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
