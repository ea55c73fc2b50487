"""A real Mosquitto 2.0 for tests, configured by the project's own generator.

Each instance runs ``/usr/sbin/mosquitto -c <generated mosquitto.conf>`` from its own
temporary directory, on free 127.0.0.1 ports: a plain listener and a TLS listener whose server
certificate comes from a CA made here with ``cryptography``. Its dynamic-security file is the
project's initial document (admin and service accounts); persistence is on, in the same
directory, so ``stop()``/``start()`` keeps accounts and retained messages::

    with Mosquitto() as broker:
        broker.host, broker.port, broker.tls_port, broker.ca_file
        broker.admin_user, broker.admin_password          # for the provisioner
        broker.service_user, broker.service_password
        broker.provisioner()                             # a MosquittoProvisioner for it

Given the platform PKI's CA chain and CRL files (``client_ca_file``, ``crl_file``), it also
runs the devices' mutual-TLS listener on ``mtls_port`` (docs/mutual-tls.md); ``reload()`` sends
SIGHUP, which makes Mosquitto re-read the CRL.

``scripts/services.sh`` installs the mosquitto package; the system's own Mosquitto (port 1883,
default configuration) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from broker.mosquitto.config import MosquittoConfig, initial_dynsec, render, write_dynsec
from broker.mosquitto.provisioner import MosquittoProvisioner
from broker.mosquitto.tls import ensure_tls_files

MOSQUITTO = "/usr/sbin/mosquitto"


class ServiceError(RuntimeError):
    """Mosquitto did not start, or stopped on its own; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for ``host``: the same private CA and
    server certificate the production one-shot makes (``ampfleet broker tls-files``)."""
    files, _ = ensure_tls_files(directory, [host])
    return files.ca_file, files.certfile, files.keyfile


class Mosquitto:
    """Mosquitto with the project's configuration, in its own directory and ports."""

    start_timeout = 15.0

    def __init__(
        self,
        directory: Path | None = None,
        *,
        client_ca_file: Path | None = None,
        crl_file: Path | None = None,
    ) -> None:
        self._owns_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls_port = free_port()
        self.mtls_port = free_port() if client_ca_file and crl_file else 0
        self.admin_user = "ampfleet-admin"
        self.admin_password = secrets.token_urlsafe(24)
        self.service_user = "ampfleet-service"
        self.service_password = secrets.token_urlsafe(24)
        self.ca_file, cert_file, key_file = make_tls_files(self.directory, self.host)
        self.dynsec_file = self.directory / "dynamic-security.json"
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        persistence = self.directory / "persistence"
        persistence.mkdir(exist_ok=True)
        config = MosquittoConfig(
            dynsec_file=str(self.dynsec_file),
            persistence_dir=str(persistence),
            port=self.port,
            bind=self.host,
            tls_port=self.tls_port,
            certfile=str(cert_file),
            keyfile=str(key_file),
            # Started as root, Mosquitto would switch to "mosquitto", who cannot write here.
            user=pwd.getpwuid(os.geteuid()).pw_name,
            log_dest=f"file {self.log_path}",
            mtls_port=self.mtls_port,
            client_ca_file=str(client_ca_file or ""),
            crl_file=str(crl_file or ""),
        )
        self.config_path.write_text(render(config))
        write_dynsec(
            self.dynsec_file,
            initial_dynsec(
                self.admin_user, self.admin_password, self.service_user, self.service_password
            ),
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The plain listener as a broker URL."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None and self.running else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def provisioner(self, timeout: float = 5.0) -> MosquittoProvisioner:
        """A provisioner logged in as this broker's admin, on the plain listener."""
        return MosquittoProvisioner(
            self.host,
            self.port,
            admin_user=self.admin_user,
            admin_password=self.admin_password,
            service_user=self.service_user,
            service_password=self.service_password,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start (same ports, accounts and data as before) and wait until both listeners
        accept connections."""
        if self.running:
            return
        if not os.access(MOSQUITTO, os.X_OK):
            raise ServiceError(f"{MOSQUITTO} is not installed (scripts/services.sh installs it)")
        with (self.directory / "stdout.log").open("ab") as out:
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
            )
        deadline = time.monotonic() + self.start_timeout
        pending = [p for p in (self.port, self.tls_port, self.mtls_port) if p]
        while pending and time.monotonic() < deadline:
            if not self.running:
                raise ServiceError(f"mosquitto exited at start:\n{self.log_tail()}")
            try:
                socket.create_connection((self.host, pending[0]), timeout=1).close()
                pending.pop(0)
            except OSError:
                time.sleep(0.02)
        if pending:
            self.stop()
            raise ServiceError(f"mosquitto did not listen in {self.start_timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: Mosquitto saves its persistence file) and wait."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its configuration, the CRL included."""
        if self._process is not None and self.running:
            self._process.send_signal(signal.SIGHUP)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Mosquitto's log, for failure messages."""
        text = ""
        for path in (self.directory / "stdout.log", self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop and delete the directory when this instance created it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
