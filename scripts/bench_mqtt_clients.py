"""MQTT client benchmark: how fast paho-mqtt, gmqtt and the cloud's ``Link`` receive.

Starts its own Mosquitto (the project's configuration, as ``tests/services/mosquitto.py`` does)
with one provisioned device, then, for each client, in a process of its own:

* ``qos0``: the receiver subscribes to ``af/+/telemetry`` at QoS 0 while a raw-socket publisher
  floods the broker; the figure is the receiver's CPU time per message received (what one
  receiving process sustains on a core of its own), since publisher, broker and receiver share
  the machine's cores;
* ``qos1``: messages are queued at the broker for the receiver's offline persistent session,
  then the receiver connects and drains them, acknowledging each: wall-clock and CPU rates.

Every message is a telemetry-like JSON document (ten values) that the receiver parses, as the
ingest worker does. Run: .venv/bin/python scripts/bench_mqtt_clients.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLIENTS = ("paho", "gmqtt", "link")
DEVICE = "bench-device-1"
PASSWORD = "bench-device-password-1"  # noqa: S105 (a throw-away broker's account)


def payload(seq: int) -> bytes:
    """A telemetry-like sample of ten values."""
    values = {f"v{i}": round(seq * 0.1 + i, 2) for i in range(10)}
    return json.dumps({"ts": 1_700_000_000_000 + seq, "seq": seq, "values": values}).encode()


# -- a raw publisher: as fast as the broker takes it ---------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    return struct.pack("!H", len(s)) + s.encode()


def publish_raw(host: str, port: int, count: int, qos: int) -> None:
    """Publish ``count`` messages as the device over one socket, in big writes."""
    with socket.create_connection((host, port)) as sock:
        body = (
            _string("MQTT")
            + bytes([4, 0xC2])
            + struct.pack("!H", 60)
            + _string(DEVICE)
            + _string(DEVICE)
            + _string(PASSWORD)
        )
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        connack = sock.recv(4)
        if len(connack) < 4 or connack[3] != 0:
            raise SystemExit(f"publisher refused: {connack!r}")
        topic = _string(f"af/{DEVICE}/telemetry")
        reader = threading.Thread(target=_drain, args=(sock,), daemon=True)
        reader.start()
        chunk: list[bytes] = []
        for seq in range(count):
            mid = struct.pack("!H", seq % 65535 + 1) if qos else b""
            rest = topic + mid + payload(seq)
            chunk.append(bytes([0x30 | (qos << 1)]) + _varint(len(rest)) + rest)
            if len(chunk) == 500:
                sock.sendall(b"".join(chunk))
                chunk.clear()
        sock.sendall(b"".join(chunk) + b"\xe0\x00")  # and DISCONNECT
        time.sleep(0.5)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


# -- the receivers, one process each -------------------------------------------------------------
class Counter:
    """Counts parsed messages; notes the first and last arrival."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.first = self.last = 0.0  # wall clock
        self.first_cpu = self.last_cpu = 0.0  # this process's CPU time
        self.done = threading.Event()

    def take(self, data: bytes) -> None:
        json.loads(data)
        if not self.received:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        self.received += 1
        self.last, self.last_cpu = time.perf_counter(), time.process_time()
        if self.received >= self.expected:
            self.done.set()


def receive_paho(args: argparse.Namespace, counter: Counter) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv311,
        clean_session=args.qos == 0,
    )
    client.username_pw_set(args.user, args.password)
    client.max_inflight_messages_set(1000)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe("af/+/telemetry", qos=args.qos)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, message: counter.take(message.payload)
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    subscribed.wait(10)
    _ready()
    counter.done.wait(args.idle_limit)
    client.disconnect()
    client.loop_stop()


def receive_gmqtt(args: argparse.Namespace, counter: Counter) -> None:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    async def main() -> None:
        client = gmqtt.Client(args.client_id, clean_session=args.qos == 0)
        client.set_auth_credentials(args.user, args.password)
        subscribed = asyncio.Event()

        def on_message(_c: object, _t: object, data: bytes, _q: int, _p: object) -> int:
            counter.take(data)
            return 0

        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        await client.connect(args.host, args.port, version=MQTTv311)
        client.subscribe("af/+/telemetry", qos=args.qos)
        await subscribed.wait()
        _ready()
        await asyncio.get_running_loop().run_in_executor(None, counter.done.wait, args.idle_limit)
        await client.disconnect()

    asyncio.run(main())


def receive_link(args: argparse.Namespace, counter: Counter) -> None:
    from cloud.devicelink.client import Link
    from cloud.devicelink.endpoint import Endpoint

    async def main() -> None:
        endpoint = Endpoint(args.host, args.port, False, args.user, args.password)
        link = Link(endpoint, args.client_id, clean_session=args.qos == 0)
        await link.run(asyncio.Event())
        future = link.subscribe("af/+/telemetry", lambda m: counter.take(m.payload), args.qos)
        assert future is not None
        await future
        _ready()
        await asyncio.get_running_loop().run_in_executor(None, counter.done.wait, args.idle_limit)
        await link.close()

    asyncio.run(main())


def _ready() -> None:
    print("ready", flush=True)


def receiver_main(args: argparse.Namespace) -> None:
    """A receiver process: prints "ready" once subscribed, then its figures as JSON (CPU and
    wall time from the first message to the last: set-up and imports are not counted)."""
    counter = Counter(args.count)
    {"paho": receive_paho, "gmqtt": receive_gmqtt, "link": receive_link}[args.receive](
        args, counter
    )
    figures = {
        "received": counter.received,
        "cpu_s": counter.last_cpu - counter.first_cpu,
        "wall_s": counter.last - counter.first,
    }
    print(json.dumps(figures), flush=True)


# -- the run ---------------------------------------------------------------------------------------
def run_one(server: object, client: str, qos: int, count: int, user: str, password: str) -> dict:
    """One client, one mode: its figures."""
    host, port = server.host, server.port  # type: ignore[attr-defined]
    client_id = f"bench-{client}-{os.getpid()}-{time.monotonic_ns()}"
    command = [
        sys.executable,
        __file__,
        "--receive",
        client,
        "--host",
        host,
        "--port",
        str(port),
        "--user",
        user,
        "--password",
        password,
        "--client-id",
        client_id,
        "--qos",
        str(qos),
        "--count",
        str(count),
    ]
    if qos == 1:
        # A persistent session, subscribed, then offline while the broker queues for it.
        setup = subprocess.Popen([*command[:-2], "--count", "0"], stdout=subprocess.PIPE, text=True)
        assert setup.stdout is not None
        setup.stdout.readline()
        setup.wait(30)
        publish_raw(host, port, count, 1)
        time.sleep(1.0)
        receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        receiver.stdout.readline()
    else:
        receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert receiver.stdout is not None
        receiver.stdout.readline()
        publish_raw(host, port, count, 0)
    out, _ = receiver.communicate(timeout=600)
    figures: dict = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="messages per run")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="of paho,gmqtt,link")
    parser.add_argument("--modes", default="qos0,qos1", help="of qos0,qos1")
    parser.add_argument("--receive", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.add_argument("--client-id", help=argparse.SUPPRESS)
    parser.add_argument("--qos", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--idle-limit", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        if args.count == 0:  # the set-up run of a persistent session
            args.count, args.idle_limit = 1, 0.5
        receiver_main(args)
        return

    from broker.admin import DeviceAccount
    from tests.services.mosquitto import Mosquitto

    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {args.count} msgs")
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "mosquitto") as server:
        server.provisioner(timeout=30).resync([DeviceAccount(DEVICE, "1", True, PASSWORD)])
        for mode in args.modes.split(","):
            for client in args.clients.split(","):
                qos = 1 if mode == "qos1" else 0
                f = run_one(
                    server, client, qos, args.count, server.service_user, server.service_password
                )
                per_msg = f["cpu_s"] / max(f["received"], 1)
                wall = f["received"] / f["wall_s"] if f["wall_s"] else 0.0
                print(
                    f"{mode} {client:6} received {f['received']:>7}/{args.count}: "
                    f"{1 / per_msg if per_msg else 0:>9,.0f} msg/s per core "
                    f"({per_msg * 1e6:.1f} µs CPU each), {wall:>9,.0f} msg/s wall clock",
                    flush=True,
                )


if __name__ == "__main__":
    main()
