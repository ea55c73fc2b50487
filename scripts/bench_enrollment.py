"""Enrollment benchmark: enrollments per API process, and a storm of chargers with certificates.

1. ``enroll``: a throwaway MariaDB database (dropped at the end), migrated and seeded, and a real
   API process (``ampfleet api --workers 1``: gunicorn, gthread) on a free port. Over HTTP, as a
   factory line would: the platform admin makes an organization, a MAC pool and a production
   batch of N serials, a second admin of the organization approves it, and a factory station (an
   API client with the factory-station role, client_credentials token) enrolls every serial with
   ``POST /api/v1/enrollment`` from C threads at once. Each board's key pair and CSR are made
   before the clock starts (the device makes them). Prints enrollments/s, latency p50/p95/p99,
   the API process's and MariaDB's CPU per enrollment, and where the time goes: the PKI's CSR
   checks, the CA key opened with the KEK, and the signature alone, timed in this process.
2. ``storm``: N device certificates issued by the platform PKI in this process (the PKI's device
   certificate profile, signed by its device CA kept in a SQLite database here; recorded as the
   PKI records them; a few revoked so the CRL lists them), and our own Mosquitto on a free port
   with one TLS listener: ``require_certificate true``, ``use_identity_as_username true``,
   ``cafile`` = the PKI's CA chain, ``crlfile`` = the PKI's CRL. Then all N chargers connect at
   once (asyncio, real TLS with their certificate and a raw MQTT 3.1.1 CONNECT, keep-alive
   long; each failed attempt retried after a jittered back-off, as the firmware does). Prints the
   time until every charger had its CONNACK, connections/s, failures, the revoked ones refused,
   and the broker's CPU seconds and peak resident memory.

Run: .venv/bin/python scripts/bench_enrollment.py --help. The figures of the latest run are in
the README.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import pwd
import random
import resource
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.mosquitto.tls import ensure_tls_files
from cloud.db import Database, utcnow
from cloud.db.migrate import upgrade
from cloud.devices.models import Device, LifecycleState, Protocol
from cloud.identity.passwords import SecretHasher
from cloud.identity.seed import ensure_admin, sync_catalogue
from cloud.organizations.models import Organization
from cloud.pki import authorities, crl, csr, issuance
from cloud.pki.models import CertificateState, DeviceCertificate
from cloud.settings import Settings
from scripts.progress import progress
from tests.services.mosquitto import MOSQUITTO, free_port

AMPFLEET = str(Path(sys.executable).parent / "ampfleet")
MARIADB = dict(host="127.0.0.1", port=3306, user="root", password="")
ADMIN_EMAIL = "bench-admin@ampfleet.bench"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def family_of(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's master and workers)."""
    found = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        found += family_of(int(child))
    return found


def pid_named(*names: str) -> int | None:
    """The first process whose command name is one of ``names`` (MariaDB's server), if any."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    return int(entry.name)
    return None


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def device_csr(common_name: str) -> str:
    """What a board makes: a fresh P-256 key and a CSR with its serial as CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


# -- 1. enrollment over HTTP ------------------------------------------------------------------


@contextlib.contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh database of our own on the shared MariaDB, dropped afterwards."""
    name = f"ampfleet_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield f"mysql+pymysql://root@{MARIADB['host']}:{MARIADB['port']}/{name}?charset=utf8mb4"
    finally:
        with pymysql.connect(**MARIADB) as conn, conn.cursor() as cur:  # type: ignore[arg-type]
            # A connection still inside a transaction would make DROP DATABASE wait for ever.
            cur.execute(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = %s AND id <> CONNECTION_ID()",
                (name,),
            )
            for (connection,) in cur.fetchall():
                with contextlib.suppress(pymysql.MySQLError):
                    cur.execute(f"KILL {int(connection)}")
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


class Api:
    """A JSON client of the API over one keep-alive HTTP connection (one per thread)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.token = token

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, form: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data: str | None = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = form
        elif body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        self.connection.request(method, "/api/v1" + path, body=data, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def made(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and return the created resource; any other answer stops the benchmark."""
        status, answer = self.call("POST", path, body)
        if status not in (200, 201):
            raise SystemExit(f"POST {path}: {status} {answer}")
        made: dict[str, Any] = answer
        return made

    def token_for(self, **grant: str) -> str:
        """An access token for the OAuth grant ``grant`` (form fields)."""
        status, answer = self.call("POST", "/auth/token", form=urllib.parse.urlencode(grant))
        if status != 200:
            raise SystemExit(f"token: {status} {answer}")
        return str(answer["access_token"])


def role_id(api: Api, name: str) -> int:
    _, roles = api.call("GET", f"/roles?name={name}")
    return int(next(r["id"] for r in roles if r["system"]))


def start_api(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``ampfleet api`` with one worker process, waited for until it answers."""
    process = subprocess.Popen(
        [AMPFLEET, "api", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status < 500:
                return process
        if process.poll() is not None:
            raise SystemExit("ampfleet api exited at start")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("ampfleet api did not answer in 60 s")


@dataclasses.dataclass
class Line:
    """The factory line made over the API: the station's token and the serials to enroll."""

    station_token: str
    serials: list[str]


def set_up_line(port: int, admin_password: str, count: int) -> Line:
    """Organization, MAC pool, batches created by the platform admin and approved by the
    organization's admin, and a factory station's API client: all over HTTP."""
    admin = Api(port)
    admin.token = admin.token_for(
        grant_type="password", username=ADMIN_EMAIL, password=admin_password
    )
    org = admin.made("/organizations", {"slug": "bench-factory", "name": "Bench factory"})
    password = secrets.token_urlsafe(16)
    approver_email = "approver@bench-factory.bench"
    admin.made(
        "/users",
        {
            "email": approver_email,
            "password": password,
            "organization_id": org["id"],
            "roles": [{"role_id": role_id(admin, "organization-admin")}],
        },
    )
    approver = Api(port)
    approver.token = approver.token_for(
        grant_type="password", username=approver_email, password=password
    )
    admin.made(
        "/mac-pools", {"organization_id": org["id"], "first": "02:BE:4C:00:00:00", "size": count}
    )
    serials: list[str] = []
    for first in range(1, count + 1, 10_000):  # a batch holds at most 10,000 serials
        last = min(count, first + 9_999)
        batch = admin.made(
            "/batches",
            {
                "organization_id": org["id"],
                "hardware_family": "ac22-3p",
                "count": last - first + 1,
                "serial_range": {"prefix": "BENCH-", "first": first, "last": last, "digits": 6},
            },
        )
        approver.made(f"/batches/{batch['id']}/approve", {})
        serials += [f"BENCH-{n:06d}" for n in range(first, last + 1)]
    client = admin.made(
        "/clients",
        {
            "name": "factory station 1",
            "organization_id": org["id"],
            "roles": [{"role_id": role_id(admin, "factory-station")}],
        },
    )
    station = Api(port).token_for(
        grant_type="client_credentials",
        client_id=client["client_id"],
        client_secret=client["client_secret"],
    )
    return Line(station, serials)


def enroll_all(port: int, line: Line, csrs: list[str], concurrency: int) -> list[float]:
    """Every serial enrolled by ``concurrency`` station threads; each request's latency."""
    latencies: list[float] = []
    macs: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()
    queue = iter(range(len(line.serials)))

    def station() -> None:
        api = Api(port, line.station_token)
        while True:
            with lock:
                index = next(queue, None)
            if index is None:
                return
            serial = line.serials[index]
            began = time.perf_counter()
            status, answer = api.call(
                "POST",
                "/enrollment",
                {
                    "serial": serial,
                    "csr": csrs[index],
                    "chip_id": f"58cf79{index:06x}",
                    "slave_ids": [f"58cf7a{index:06x}", f"58cf7b{index:06x}"],
                },
            )
            took = time.perf_counter() - began
            with lock:
                if status == 201 and answer["state"] == "provisioned":
                    latencies.append(took)
                    macs.add(answer["mac"])
                else:
                    failures.append(f"{serial}: {status} {answer}")
                progress(len(latencies) + len(failures), len(line.serials), "enrolling")

    threads = [threading.Thread(target=station) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        print(f"  {len(failures)} enrollments failed, first: {failures[0]}")
    if len(macs) != len(latencies):
        print(f"  DUPLICATE MACs: {len(latencies)} enrolled, {len(macs)} distinct addresses")
    return latencies


def split_in_process(settings: Settings, csrs: list[str], serials: list[str]) -> None:
    """The PKI's parts of one enrollment, timed alone in this process."""
    database = Database(settings.database_url)
    samples = list(zip(serials, csrs, strict=True))[: min(len(csrs), 500)]
    with database.transaction() as session:
        found = authorities.ensure(session, settings)
        began = time.perf_counter()
        for _ in range(50):
            key = found.devices.key(session, settings)
        unseal = (time.perf_counter() - began) / 50
    began = time.perf_counter()
    requests = [csr.accept(pem, serial) for serial, pem in samples]
    verify = (time.perf_counter() - began) / len(samples)
    now = utcnow()
    began = time.perf_counter()
    for request, (serial, _) in zip(requests, samples, strict=True):
        issuance.device_certificate(
            request.public_key(),
            serial,
            found.devices.certificate,
            key,
            now,
            dt.timedelta(days=settings.pki_certificate_days),
        )
    sign = (time.perf_counter() - began) / len(samples)
    database.engine.dispose()
    print(
        f"  in this process (cloud.pki), per enrollment: CSR checks {verify * 1e3:.2f} ms,"
        f" device CA key opened with the KEK {unseal * 1e3:.2f} ms, certificate built and"
        f" signed {sign * 1e3:.2f} ms: {(verify + unseal + sign) * 1e3:.2f} ms of crypto"
    )


def request_in_process(settings: Settings, token: str, serials: list[str], csrs: list[str]) -> None:
    """The same request through the app in this process (Flask's test client: no HTTP, no
    gunicorn), one at a time: its CPU, and the SQL statements it sends and the time they take
    (round trip to MariaDB included), counted at the engine."""
    from sqlalchemy import event

    from cloud.app import create_app
    from cloud.db import get_database

    app = create_app(settings)
    engine = get_database(app).engine
    sql = {"statements": 0, "seconds": 0.0}

    def before(conn: Any, *_: Any) -> None:
        conn.info["bench.began"] = time.perf_counter()

    def after(conn: Any, *_: Any) -> None:
        sql["statements"] += 1
        sql["seconds"] += time.perf_counter() - conn.info.pop("bench.began")

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    cpu = time.process_time()
    began = time.perf_counter()
    for n, (serial, pem) in enumerate(zip(serials, csrs, strict=True)):
        body = {
            "serial": serial,
            "csr": pem,
            "chip_id": f"58cf7c{n:06x}",
            "slave_ids": [f"58cf7d{n:06x}", f"58cf7e{n:06x}"],
        }
        answer = client.post("/api/v1/enrollment", json=body, headers=headers)
        if answer.status_code != 201:
            raise SystemExit(f"in-process enrollment refused: {answer.get_json()}")
    wall = (time.perf_counter() - began) / len(serials)
    cpu = (time.process_time() - cpu) / len(serials)
    engine.dispose()
    print(
        f"  in this process, one at a time through the app (no HTTP): {wall * 1e3:.1f} ms per"
        f" enrollment, {cpu * 1e3:.1f} ms of it CPU; {sql['statements'] / len(serials):.0f} SQL"
        f" statements per enrollment taking {sql['seconds'] / len(serials) * 1e3:.1f} ms"
        " (driver, round trip and MariaDB; the commit not counted)"
    )


def bench_enrollment(count: int, concurrency: int, threads: int) -> None:
    """Part 1 (see the module docstring)."""
    print(f"\n== enrollment: {count} boards, {concurrency} station threads, 1 API process")
    with tempfile.TemporaryDirectory(prefix="bench-enroll-") as tmp, mariadb_database() as url:
        admin_password = secrets.token_urlsafe(16)
        env = {
            **os.environ,
            "AMPFLEET_DATA_DIR": tmp,
            "AMPFLEET_DATABASE_URL": url,
            "AMPFLEET_PKI_KEK": secrets.token_urlsafe(32),
            "AMPFLEET_ADMIN_EMAIL": ADMIN_EMAIL,
            "AMPFLEET_ADMIN_PASSWORD": admin_password,
            "AMPFLEET_API_THREADS": str(threads),
            "AMPFLEET_LOG_LEVEL": "WARNING",
        }
        settings = Settings.load(environ=env)
        upgrade(url)
        database = Database(url)
        with database.transaction() as session:
            sync_catalogue(session)
            ensure_admin(
                session,
                SecretHasher(settings.password_kdf),
                ADMIN_EMAIL,
                admin_password,
                settings.data_path,
            )
        database.engine.dispose()
        port = free_port()
        api = start_api(env, port)
        try:
            # One more for the CAs' first use, and a few for the in-process measure.
            extra = min(200, count)
            line = set_up_line(port, admin_password, 1 + count + extra)
            csrs = []
            for n, serial in enumerate(line.serials, 1):
                csrs.append(device_csr(serial))
                if n % 500 == 0 or n == len(line.serials):
                    progress(n, len(line.serials), "boards' keys and CSRs")
            later = Line(line.station_token, line.serials[-extra:]), csrs[-extra:]
            line.serials, csrs = line.serials[:-extra], csrs[:-extra]
            # The first enrollment makes the CAs (keys, certificates, first CRL): not timed.
            first = Api(port, line.station_token).call(
                "POST",
                "/enrollment",
                {
                    "serial": line.serials[0],
                    "csr": csrs[0],
                    "chip_id": "58cf79ffffff",
                    "slave_ids": ["58cf7affffff"],
                },
            )
            if first[0] != 201:
                raise SystemExit(f"enrollment refused: {first}")
            line.serials, csrs = line.serials[1:], csrs[1:]
            mariadb = pid_named("mariadbd", "mysqld")
            processes = family_of(api.pid)
            cpu_api = sum(cpu_of(p) for p in processes)
            cpu_db = cpu_of(mariadb) if mariadb else 0.0
            began = time.monotonic()
            station_cpu = time.process_time()
            latencies = enroll_all(port, line, csrs, concurrency)
            seconds = time.monotonic() - began
            station_cpu = time.process_time() - station_cpu
            cpu_api = sum(cpu_of(p) for p in processes) - cpu_api
            cpu_db = (cpu_of(mariadb) if mariadb else 0.0) - cpu_db
        finally:
            api.terminate()
            api.wait(30)
        done = len(latencies)
        print(
            f"  {done} enrolled in {seconds:.1f} s: {done / seconds:,.1f} enrollments/s;"
            f" latency p50 {percentile(latencies, 0.5) * 1e3:.0f} ms, p95"
            f" {percentile(latencies, 0.95) * 1e3:.0f} ms, p99"
            f" {percentile(latencies, 0.99) * 1e3:.0f} ms, mean"
            f" {statistics.fmean(latencies) * 1e3:.0f} ms"
        )
        per = cpu_api / max(done, 1)
        print(
            f"  API process CPU {per * 1e3:.1f} ms per enrollment = {1 / max(per, 1e-9):,.0f}"
            f" enrollments/s on a core of its own ({cpu_api / seconds:.2f} cores busy);"
            + (
                f" MariaDB {cpu_db / max(done, 1) * 1e3:.1f} ms per enrollment"
                f" ({cpu_db / seconds:.2f} cores, the whole server's)"
                if mariadb
                else " MariaDB's CPU not readable"
            )
            + f"; the station threads {station_cpu / seconds:.2f} cores"
        )
        request_in_process(settings, later[0].station_token, later[0].serials, later[1])
        split_in_process(settings, csrs, line.serials)


# -- 2. the connection storm ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Charger:
    """A simulated charger's identity: its id and the files of its key and certificate."""

    device_id: str
    certfile: Path
    keyfile: Path
    revoked: bool


@dataclasses.dataclass(frozen=True)
class Pki:
    """What the broker reads: the device CA chain (``cafile``) and the CRL (``crlfile``)."""

    ca_file: Path
    crl_file: Path


def issue_fleet(directory: Path, count: int, revoked: int) -> tuple[Pki, list[Charger]]:
    """``count`` chargers with a key each and a certificate issued by the platform PKI (kept in
    a SQLite database here, every certificate recorded), the last ``revoked`` of them revoked
    and listed on the CRL the PKI writes for the broker."""
    settings = Settings.load(
        {
            "data_dir": directory,
            "database_url": f"sqlite:///{directory / 'pki.db'}",
            "pki_kek": secrets.token_urlsafe(32),
            "log_level": "WARNING",
        },
        environ={},
    )
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    certs = directory / "devices"
    certs.mkdir()
    chargers: list[Charger] = []
    with database.transaction() as session:
        organization = Organization(slug="bench", name="Benchmark")
        session.add(organization)
        session.flush()
        found = authorities.ensure(session, settings)
        ca_key = found.devices.key(session, settings)
        validity = dt.timedelta(days=settings.pki_certificate_days)
        now = utcnow()
        began = time.monotonic()
        for n in range(count):
            device_id = f"storm-{n:05d}"
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = issuance.device_certificate(
                key.public_key(), device_id, found.devices.certificate, ca_key, now, validity
            )
            is_revoked = n >= count - revoked
            session.add(
                Device(
                    id=device_id,
                    serial=device_id,
                    hardware_family="ac22-3p",
                    protocol=Protocol.NATIVE,
                    state=LifecycleState.PROVISIONED,
                    organization_id=organization.id,
                    approved_at=now,
                    approved_by="system:bench",
                )
            )
            session.add(
                DeviceCertificate(
                    serial=issuance.serial_hex_of(certificate),
                    device_id=device_id,
                    authority=found.devices.name,
                    not_before=certificate.not_valid_before_utc,
                    not_after=certificate.not_valid_after_utc,
                    fingerprint=issuance.fingerprint(certificate),
                    public_key_sha256=issuance.public_key_sha256(key.public_key()),
                    state=CertificateState.REVOKED if is_revoked else CertificateState.ISSUED,
                    revoked_at=now if is_revoked else None,
                    revocation_reason="keyCompromise" if is_revoked else None,
                    certificate_pem=issuance.pem(certificate),
                )
            )
            charger = Charger(
                device_id, certs / f"{device_id}.pem", certs / f"{device_id}.key", is_revoked
            )
            charger.certfile.write_text(issuance.pem(certificate))
            charger.keyfile.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            chargers.append(charger)
            if (n + 1) % 500 == 0 or n + 1 == count:
                progress(n + 1, count, "certificates issued")
        issued = time.monotonic() - began
        session.flush()
        crl.regenerate(session, settings)  # its files are written once this commits
    database.engine.dispose()
    print(
        f"  issued {count} device certificates in {issued:.1f} s ({count / issued:,.0f}/s:"
        f" key pair, certificate, PEM files, records), {revoked} revoked and on the CRL"
    )
    return Pki(Path(settings.pki_ca_file), Path(settings.pki_crl_file)), chargers


MOSQUITTO_CONF = """\
# The bench's own Mosquitto: one TLS listener where a device's certificate is its credential.
per_listener_settings false
allow_anonymous false
persistence false
user {user}
log_dest file {log}
log_type error
log_type warning
connection_messages false
max_keepalive 65535
listener {port} 127.0.0.1
max_connections -1
certfile {certfile}
keyfile {keyfile}
cafile {cafile}
crlfile {crlfile}
require_certificate true
use_identity_as_username true
"""


def listen_drops() -> int:
    """The kernel's count of connections dropped at a full accept queue (TcpExt ListenDrops,
    every listener of the machine): a storm beyond the broker's listen backlog shows here."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenDrops"])
    return 0


def raise_nofile() -> None:
    """Let this process (and what it starts) hold as many descriptors as the system allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class StormBroker:
    """Our own Mosquitto with the storm's TLS listener, on a free port."""

    def __init__(self, directory: Path, pki: Pki) -> None:
        self.directory = directory
        self.port = free_port()
        files, _ = ensure_tls_files(directory / "server", ["127.0.0.1"])
        self.server_ca = files.ca_file
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            MOSQUITTO_CONF.format(
                user=pwd.getpwuid(os.geteuid()).pw_name,
                log=self.log,
                port=self.port,
                certfile=files.certfile,
                keyfile=files.keyfile,
                cafile=pki.ca_file,
                crlfile=pki.crl_file,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start it and wait until it listens; its pid."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=raise_nofile,  # before any thread of ours: nothing to deadlock
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"mosquitto exited:\n{self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self.process.pid
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not listen in 15 s")

    def usage(self) -> tuple[float, int, int]:
        """(CPU seconds, resident bytes now, peak resident bytes) of the broker."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = {
            line.split(":")[0]: int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("VmRSS:", "VmHWM:"))
        }
        return cpu_of(self.process.pid), kib["VmRSS"] * 1024, kib["VmHWM"] * 1024

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def mqtt_connect(client_id: str, keepalive: int) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session, no credentials: the certificate is the
    credential; MQTT-3.1.2-3)."""
    name = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    payload = len(name).to_bytes(2, "big") + name
    remaining = len(variable) + len(payload)  # < 128: one length byte
    return bytes([0x10, remaining]) + variable + payload


@dataclasses.dataclass
class Tally:
    """What the storm did, counted as it happens."""

    connected: int = 0
    refused: int = 0  # revoked chargers turned away, as they should be
    wrongly_admitted: int = 0  # revoked chargers that got a CONNACK 0
    failures: int = 0  # failed attempts of good chargers (each retried)
    gave_up: int = 0
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    times: list[float] = dataclasses.field(default_factory=list)  # storm start -> CONNACK
    last: float = 0.0


@dataclasses.dataclass(frozen=True)
class StormOptions:
    """How the chargers connect."""

    rate: float  # chargers started per second; 0: all at once
    timeout: float  # seconds an attempt may take before it is abandoned and retried
    in_flight: int  # attempts under way at most; 0: no bound
    loop: str  # "uvloop" or "asyncio"


def client_context(charger: Charger, server_ca: Path) -> ssl.SSLContext:
    """The TLS client side of one charger: its own certificate, the broker's CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server_ca)
    context.load_cert_chain(charger.certfile, charger.keyfile)
    return context


async def one_charger(
    charger: Charger,
    context: ssl.SSLContext,
    port: int,
    tally: Tally,
    began: float,
    held: list[asyncio.StreamWriter],
    options: StormOptions,
    gate: asyncio.Semaphore,
) -> None:
    """Connect (TLS, CONNECT, CONNACK) and hold the connection; on failure back off with
    jitter and try again, as the firmware does, up to ten attempts. A revoked charger tries
    once. ``gate`` bounds the attempts under way (``--in-flight``)."""
    timeout = options.timeout
    for attempt in range(10):
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                    ),
                    timeout,
                )
                writer.write(mqtt_connect(charger.device_id, 0))
                connack = await asyncio.wait_for(reader.readexactly(4), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            # TLS 1.3: the broker judges the client's certificate after the client's side of
            # the handshake is done, so a refusal shows up as the connection dropped here.
            if charger.revoked:
                tally.refused += 1
                return
            kind = type(exc).__name__
            tally.reasons[kind] = tally.reasons.get(kind, 0) + 1
            tally.failures += 1
            jitter = random.uniform(0.5, 1.0)  # noqa: S311 (not cryptographic)
            await asyncio.sleep(jitter * min(30.0, 2.0**attempt))
            continue
        if connack[0] != 0x20 or connack[3] != 0:
            tally.reasons[f"CONNACK {connack[3]}"] = (
                tally.reasons.get(f"CONNACK {connack[3]}", 0) + 1
            )
            writer.close()
            tally.failures += 1
            continue
        if charger.revoked:
            tally.wrongly_admitted += 1
        else:
            tally.connected += 1
            now = time.monotonic()
            tally.times.append(now - began)
            tally.last = now
        held.append(writer)
        return
    tally.gave_up += 1


async def storm(
    chargers: list[Charger], server_ca: Path, broker: StormBroker, options: StormOptions
) -> tuple[Tally, tuple[float, int, int], tuple[float, int, int]]:
    """Every charger at once (or ``rate`` per second); the tally and the broker's usage before
    and after."""
    contexts = []
    for n, charger in enumerate(chargers, 1):
        contexts.append(client_context(charger, server_ca))
        if n % 500 == 0 or n == len(chargers):
            progress(n, len(chargers), "client TLS contexts")
    tally = Tally()
    held: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(options.in_flight or len(chargers))
    rate = options.rate
    before = broker.usage()
    began = time.monotonic()
    tasks = []
    for n, (charger, context) in enumerate(zip(chargers, contexts, strict=True)):
        if rate > 0:
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        tasks.append(
            asyncio.create_task(
                one_charger(charger, context, broker.port, tally, began, held, options, gate)
            )
        )
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        progress(tally.connected, len(chargers) - sum(c.revoked for c in chargers), "connected")
    after = broker.usage()
    # Settled: what the broker holds for the connections alone (a second for a big storm).
    await asyncio.sleep(min(1.0, len(chargers) / 1000))
    steady = broker.usage()
    for writer in held:
        writer.close()
    return tally, before, (after[0], steady[1], steady[2])


def bench_storm(count: int, revoked: int, options: StormOptions) -> None:
    """Part 2 (see the module docstring)."""
    rate = options.rate
    raise_nofile()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        raise SystemExit(f"RLIMIT_NOFILE is {soft}: too few descriptors for {count} connections")
    print(
        f"\n== storm: {count} chargers ({revoked} revoked) connecting with their certificates"
        f" to Mosquitto, {'all at once' if rate <= 0 else f'{rate:.0f} per second'}"
        + (f", at most {options.in_flight} attempts under way" if options.in_flight else "")
    )
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp:
        directory = Path(tmp)
        pki, chargers = issue_fleet(directory, count, revoked)
        broker = StormBroker(directory, pki)
        broker.start()
        try:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu = usage.ru_utime + usage.ru_stime
            drops = listen_drops()
            work = storm(chargers, broker.server_ca, broker, options)
            if options.loop == "uvloop":
                import uvloop

                tally, before, after = uvloop.run(work)
            else:
                tally, before, after = asyncio.run(work)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu = usage.ru_utime + usage.ru_stime - client_cpu
            drops = listen_drops() - drops
        finally:
            broker.stop()
        good = count - revoked
        seconds = max(tally.times) if tally.times else float("nan")
        print(
            f"  {tally.connected} of {good} connected (CONNACK) {seconds:.1f} s after the storm"
            f" began: {tally.connected / seconds:,.0f} connections/s; per charger p50"
            f" {percentile(tally.times, 0.5):.1f} s, p95 {percentile(tally.times, 0.95):.1f} s"
        )
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(tally.reasons.items())) or "none"
        print(
            f"  failed attempts (retried with back-off): {tally.failures} ({reasons}); gave up:"
            f" {tally.gave_up}; revoked refused: {tally.refused} of {revoked}, admitted:"
            f" {tally.wrongly_admitted}; connection attempts dropped at the broker's full accept"
            f" queue (kernel ListenDrops): {drops}"
        )
        cpu = after[0] - before[0]
        per_connection = (after[1] - before[1]) / max(tally.connected, 1)
        print(
            f"  mosquitto: {cpu:.1f} CPU s for the storm ({cpu / max(tally.connected, 1) * 1e3:.2f}"
            f" ms per connection = {tally.connected / max(cpu, 1e-9):,.0f} connections/s on a core"
            f" of its own); resident {after[1] / 2**20:.0f} MiB holding them, peak"
            f" {after[2] / 2**20:.0f} MiB ({per_connection / 1024:.1f} KiB per connection)"
        )
        print(f"  this client process: {client_cpu:.1f} CPU s (TLS contexts included)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", choices=["enroll", "storm", "both"], default="both", help="what to run"
    )
    parser.add_argument("--enrollments", type=int, default=2000, help="boards enrolled")
    parser.add_argument("--concurrency", type=int, default=8, help="station threads at once")
    parser.add_argument("--api-threads", type=int, default=4, help="threads of the API worker")
    parser.add_argument("--devices", type=int, default=10_000, help="chargers in the storm")
    parser.add_argument("--revoked", type=int, default=100, help="of them revoked (on the CRL)")
    parser.add_argument(
        "--rate", type=float, default=0, help="chargers started per second (0: all at once)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30, help="seconds a charger waits per attempt"
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=0,
        help="connection attempts under way at most (0: no bound, a true storm)",
    )
    parser.add_argument(
        "--loop", choices=["asyncio", "uvloop"], default="uvloop", help="the chargers' loop"
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {ssl.OPENSSL_VERSION}"
    )
    if args.part in ("enroll", "both"):
        bench_enrollment(args.enrollments, args.concurrency, args.api_threads)
    if args.part in ("storm", "both"):
        revoked = min(args.revoked, args.devices // 2)
        options = StormOptions(args.rate, args.timeout, args.in_flight, args.loop)
        bench_storm(args.devices, revoked, options)


if __name__ == "__main__":
    main()
