"""Making Mosquitto re-read the platform's CRL whenever the PKI rewrites it.

Mosquitto 2.0.11 reads its ``crlfile`` at start and again on SIGHUP, never by itself (measured
against /usr/sbin/mosquitto, docs/mutual-tls.md): until it does, a revoked certificate still
passes the TLS handshake. ``cloud.pki.crl`` replaces the file atomically (a rename) after every
revocation and when the CRL is renewed; ``CrlWatcher`` notices a new file (inode, size,
modification time) and signals the broker. It runs beside Mosquitto, where the broker's process
can be signalled (same host, or a container sharing its PID namespace):
``ampfleet broker crl-reload --pid-file ...``.

A SIGHUP costs little: Mosquitto re-reads its configuration and the listeners' certificates,
CA file and CRL; connected clients stay connected and the dynamic-security accounts are
untouched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between looks at the file: a stat, nothing more

Stamp = tuple[int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def signal_pid_file(pid_file: Path) -> Callable[[], None]:
    """A reload that sends SIGHUP to the process named by ``pid_file`` (Mosquitto's
    ``pid_file``), read afresh every time: the broker may have restarted."""

    def reload() -> None:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)

    return reload


class CrlWatcher:
    """Calls ``reload`` whenever ``crl_file`` is replaced or changed."""

    def __init__(
        self, crl_file: Path, reload: Callable[[], None], interval: float = INTERVAL
    ) -> None:
        self.crl_file = crl_file
        self.reload = reload
        self.interval = interval
        self.reloads = 0
        # The file as the broker last read it: at its start, which comes before ours.
        self._seen = _stamp(crl_file)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One look: reload when the file changed since the last one; True when it did."""
        now = _stamp(self.crl_file)
        if now is None or now == self._seen:
            return False  # a missing file is the PKI's to write; the broker keeps its CRL
        self.reload()
        self._seen = now
        self.reloads += 1
        log.info("%s changed: Mosquitto told to re-read it", self.crl_file)
        return True

    def run(self) -> None:
        """Look every ``interval`` seconds until ``stop``; a failed reload is retried."""
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except (OSError, ValueError):  # no broker right now (a restart): look again
                log.exception("telling Mosquitto to re-read %s failed", self.crl_file)

    def start(self) -> None:
        """Watch in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="crl-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
