"""``ampfleet worker ocpp``: the OCPP bridge on one asyncio loop, in a thread of its own so that
it starts and stops like the other workers (``start``/``stop``).

The loop is uvloop's unless ``ocpp_uvloop`` is off: every MeterValues costs a few loop turns
(the frame read, the handler's task step, the answer's write, the coalesced PUBLISH), and
uvloop runs those in C. websockets 15 and gmqtt 0.8 use only the asyncio API uvloop
implements (transports and protocols, ``create_server``, TLS with ``peercert``); the tests run
the bridge on it, and once on the standard loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import ocpp.messages

from cloud.db import Database
from cloud.devicelink.endpoint import Endpoint
from cloud.identity.passwords import SecretHasher
from cloud.ocpp.certificates import CsrSigner
from cloud.ocpp.context import SessionContext
from cloud.ocpp.link import BridgeLink
from cloud.ocpp.records import Records
from cloud.ocpp.registry import Gatekeeper, Recorder
from cloud.ocpp.server import OcppServer, tls_context
from cloud.ocpp.uplink import DataTransferRules
from cloud.settings import Settings

log = logging.getLogger(__name__)

RECORD_INTERVAL = 0.5  # seconds between batched writes of what chargers said


def event_loop_factory(uvloop_wanted: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when wanted and installed, else None (the standard loop)."""
    if not uvloop_wanted:
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop's wheels: the standard loop does the same
        log.warning("uvloop is not installed: the OCPP bridge runs on the standard asyncio loop")
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class OcppWorker:
    """The bridge: a WebSocket listener for chargers and a broker connection for the contract."""

    def __init__(
        self, settings: Settings, database: Database, endpoint: Endpoint, client_id: str
    ) -> None:
        self.settings = settings
        self.host: str = settings.ocpp_host
        self.port: int = settings.ocpp_port
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.server: OcppServer | None = None
        self.link = BridgeLink(endpoint, client_id, self._deliver, self._announce)
        signer = CsrSigner(database, settings) if settings.ocpp_sign_csr else None
        self.recorder = Recorder(database, self.link.bridge_id)
        self.context = SessionContext(
            link=self.link,
            recorder=self.recorder,
            heartbeat_interval=settings.ocpp_heartbeat_interval,
            call_timeout=settings.ocpp_call_timeout,
            transfers=DataTransferRules.parse(settings.ocpp_data_transfer),
            signer=signer,
            records=Records(database),
        )
        self.gatekeeper = Gatekeeper(
            database, SecretHasher(settings.password_kdf), settings.ocpp_security_profile
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Listen and connect to the broker; returns once the listener is up."""
        self._thread = threading.Thread(target=self._main, name="ocpp-bridge", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout) or self.failed is not None:
            raise RuntimeError(f"the OCPP bridge did not start: {self.failed}")

    def stop(self) -> None:
        """Close every charger's connection (publishing them offline), then the broker's."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _main(self) -> None:
        try:
            with asyncio.Runner(loop_factory=event_loop_factory(self.settings.ocpp_uvloop)) as run:
                run.run(self._run())
        except BaseException as exc:
            self.failed = exc
            self.ready.set()
            log.exception("the OCPP bridge stopped")

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # Validate in line: the library's default hands every validation to a thread, which
        # costs more than the validation of an OCPP message itself.
        ocpp.messages.ASYNC_VALIDATION = False
        settings = self.settings
        context = tls_context(
            settings.ocpp_security_profile,
            settings.ocpp_tls_cert_file,
            settings.ocpp_tls_key_file,
            settings.ocpp_tls_client_ca_file,
        )
        self.server = OcppServer(
            self.gatekeeper,
            self.context,
            profile=settings.ocpp_security_profile,
            ssl_context=context,
            no_subprotocol=settings.ocpp_no_subprotocol,
            ping_interval=settings.ocpp_ping_interval,
        )
        linking = asyncio.create_task(self.link.run(self._stopping))
        recording = asyncio.create_task(self._record(self._stopping))
        self.port = await self.server.start(self.host, self.port)
        log.info(
            "OCPP bridge on %s:%s, security profile %s",
            self.host,
            self.port,
            settings.ocpp_security_profile,
        )
        self.ready.set()
        await self._stopping.wait()
        await self.server.stop()
        await recording
        linking.cancel()
        await asyncio.sleep(0.1)  # let the last publishes (offline statuses) go out
        await self.link.close()

    async def _record(self, stopping: asyncio.Event) -> None:
        """Write what the sessions learnt, every ``RECORD_INTERVAL`` s and once at the end."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RECORD_INTERVAL)
            try:
                await asyncio.to_thread(self.recorder.flush)
            except Exception:  # the next round retries what it can; the bridge goes on
                log.exception("recording what chargers said failed")
            if stopping.is_set():
                return

    def _deliver(self, device_id: str, channel: str, payload: bytes) -> None:
        if self.server is not None:
            self.server.deliver(device_id, channel, payload)

    def _announce(self) -> None:
        if self.server is not None:
            self.server.announce()

    def call_soon(self, callback: Any) -> None:
        """Run ``callback`` on the bridge's loop (tests, diagnostics)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(callback)
