"""Real time-series servers for tests: Debian's ``influxd`` (1.6.7) and ``victoria-metrics``.

Each instance runs from a configuration generated into its own temporary directory, on free
127.0.0.1 ports, so several can run at once and none touches the system's data::

    with Influxd() as server:
        server.url          # http://127.0.0.1:<port>
        server.kill()       # SIGKILL, as a crash would
        server.start()      # same port, same data: recovers from its WAL

``scripts/services.sh`` installs ``influxd`` on a fresh machine; ``victoria-metrics`` is
optional (the tests that need it skip without it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

INFLUXD = "/usr/bin/influxd"
VICTORIA_METRICS = "/usr/bin/victoria-metrics"


class ServiceError(RuntimeError):
    """The server did not start, or stopped on its own; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    """A server process with an HTTP health endpoint, its files in one directory."""

    binary: str
    health_path: str
    health_status: int = 200
    start_timeout = 30.0

    def __init__(self, directory: Path | None = None) -> None:
        self._owns_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix=self.__class__.__name__.lower() + "-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        self.log_path = self.directory / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server (same port and data as before) and wait until it answers."""
        if self.running:
            return
        if not os.access(self.binary, os.X_OK):
            raise ServiceError(f"{self.binary} is not installed (scripts/services.sh installs it)")
        # The servers read overrides from INFLUXDB_* / VM_* variables: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INFLUXDB_", "VM_"))}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.directory,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceError(f"{self.binary} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=1) as response:
                    if response.status == self.health_status:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"{self.binary} did not answer in {self.start_timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM) and wait; SIGKILL if it hangs."""
        self._signal(signal.SIGTERM, timeout=20)

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crash or the OOM killer would."""
        self._signal(signal.SIGKILL, timeout=10)

    def _signal(self, signum: int, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the server and delete its directory when this instance created it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Influxd(_Server):
    """Debian's InfluxDB 1.6.7 with a private configuration (HTTP /write and /query)."""

    binary = INFLUXD
    health_path = "/ping"
    health_status = 204

    def __init__(self, directory: Path | None = None) -> None:
        super().__init__(directory)
        # The RPC listener (backup/restore, default 8088) must move too, or a second instance
        # fails to bind.
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.config_path = self.directory / "influxdb.conf"
        self.config_path.write_text(self._config())

    def _config(self) -> str:
        d = self.directory
        return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false
  # Production needs 0 as well: with 100k+ chargers the device tag exceeds the default 100000.
  max-values-per-tag = 0

[monitor]
  # No _internal database: nothing writes but the test.
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false

[[graphite]]
  enabled = false
[[collectd]]
  enabled = false
[[opentsdb]]
  enabled = false
[[udp]]
  enabled = false
"""

    def command(self) -> list[str]:
        """``influxd run`` with the generated configuration."""
        return [self.binary, "run", "-config", str(self.config_path)]


class VictoriaMetrics(_Server):
    """Debian's VictoriaMetrics: accepts line protocol on ``/api/v2/write`` like InfluxDB 2."""

    binary = VICTORIA_METRICS
    health_path = "/health"

    def command(self) -> list[str]:
        """Single-node VictoriaMetrics on the private port and directory."""
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.directory / 'data'}",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
        ]
