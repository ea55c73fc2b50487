"""The embedded broker (broker.embedded.run) for tests, in a background thread of the test
process, against a given records database, on a free 127.0.0.1 port::

    with EmbeddedBroker(settings) as broker:
        broker.port            # plain MQTT
        broker.registry        # the DeviceRegistry its plugins use (counts argon2 checks)
        broker.stop()          # shut down; start() serves again on the same port

With a ``broker.embedded.Durability``, the broker gates devices and keeps sessions as
``ampfleet broker run`` does.

``settings`` is a mapping of settings overrides (database_url, data_dir, password_kdf, ...);
``broker_url`` is set here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from amqtt.broker import Broker

from broker.embedded import Durability, run
from broker.registry import DeviceRegistry
from cloud.settings import Settings


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """amqtt with the device plugins, running in its own thread and event loop."""

    start_timeout = 15.0

    def __init__(self, overrides: Mapping[str, Any], durability: Durability | None = None) -> None:
        self.durability = durability
        self.host = "127.0.0.1"
        self.port = free_port()
        self.settings = Settings.load(
            {**overrides, "broker": "embedded", "broker_url": f"mqtt://{self.host}:{self.port}"}
        )
        self.registry: DeviceRegistry | None = None
        self.broker: Broker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether the broker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start serving and wait until the port accepts connections."""
        if self.running:
            return
        started = threading.Event()
        self._error = None

        def ready(broker: Broker, registry: DeviceRegistry) -> None:
            self.broker, self.registry = broker, registry
            started.set()

        def main() -> None:
            async def serve() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                await run(self.settings, stop=self._stop, ready=ready, durability=self.durability)

            try:
                asyncio.run(serve())
            except BaseException as exc:  # reported by start() or stop()
                self._error = exc
            finally:
                started.set()

        self._thread = threading.Thread(target=main, name="embedded-broker", daemon=True)
        self._thread.start()
        if not started.wait(self.start_timeout) or self._error is not None:
            raise RuntimeError(f"the embedded broker did not start: {self._error!r}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the embedded broker does not accept connections")

    def stop(self) -> None:
        """Shut the broker down and wait for its thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and self.running:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._thread = None
        if self._error is not None:
            raise RuntimeError(f"the embedded broker failed: {self._error!r}") from self._error

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
