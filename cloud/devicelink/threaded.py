"""The device link for threaded callers: Flask request handlers, the threaded workers, the CLI.

``ThreadedLink`` runs a ``Link`` on an asyncio loop in a background thread; its methods may be
called from any other thread, and those that wait for the broker wait with a timeout. Handlers
run on the link's thread, so a handler must not wait for the link itself (``publish`` from a
handler raises instead of dead-locking). ``publish_batch`` and ``end_session`` are the
short-lived uses: connect, do one thing, leave.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from cloud.devicelink.client import Link
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.errors import (
    CredentialsRefusedError,
    LinkError,
    LinkTimeoutError,
    NotConnectedError,
)
from cloud.devicelink.subscriptions import Handler, Message

log = logging.getLogger(__name__)

T = TypeVar("T")
Batch = list[tuple[str, bytes, bool]]  # (topic, payload, retain), published in this order


class ThreadedLink:
    """A ``Link`` on its own loop thread, with a blocking interface."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        clean_session: bool = True,
        manual_ack: bool = False,
        timeout: float = 5.0,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        attempts: int | None = None,
    ) -> None:
        self.link = Link(
            endpoint,
            client_id,
            clean_session=clean_session,
            manual_ack=manual_ack,
            first_delay=first_delay,
            max_delay=max_delay,
        )
        self.timeout = timeout
        self._attempts = attempts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._gave_up = threading.Event()  # out of attempts, or refused
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> Endpoint:
        """Where the link connects."""
        return self.link.endpoint

    @property
    def client_id(self) -> str:
        """The MQTT client id."""
        return self.link.client_id

    @property
    def connected(self) -> threading.Event:
        """Set while connected."""
        return self.link.connected

    @property
    def refused(self) -> threading.Event:
        """Set once the broker refused the credentials (the link stops trying)."""
        return self.link.refused

    @property
    def generation(self) -> int:
        """The current connection's number (see ``Link.ack``)."""
        return self.link.generation

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread and connect in the background (with back-off)."""
        self._ready.clear()
        self._gave_up.clear()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(),), name=f"link-{self.client_id}", daemon=True
        )
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._ready.set()
        connecting = asyncio.create_task(self.link.run(self._stopping, self._attempts))
        connecting.add_done_callback(self._connected_or_not)
        await self._stopping.wait()
        connecting.cancel()
        await self.link.close()

    def _connected_or_not(self, task: asyncio.Task[bool]) -> None:
        if not task.cancelled() and task.exception() is None and not task.result():
            self._gave_up.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect and end the loop thread."""
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)
        self._loop = self._stopping = None

    def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for the connection; raise ``CredentialsRefusedError``, ``NotConnectedError`` (out
        of attempts) or ``LinkTimeoutError``."""
        waited = 0.0
        limit = self.timeout if timeout is None else timeout
        while not self.connected.wait(0.02):
            if self.refused.is_set():
                raise CredentialsRefusedError(
                    f"{self.endpoint.where} refused {self.endpoint.username}"
                )
            if self._gave_up.is_set():
                raise NotConnectedError(f"{self.endpoint.where}: {self.link.last_error}")
            waited += 0.02
            if waited >= limit:
                raise LinkTimeoutError(f"no connection to {self.endpoint.where} in {limit:g} s")

    def __enter__(self) -> ThreadedLink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- on the loop, from other threads ------------------------------------------------------
    def _call(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``function`` on the loop; its outcome as a thread-safe future."""
        loop = self._loop
        if loop is None:
            raise NotConnectedError("the link is not started")

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop)

    def _await(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise NotConnectedError("the link is not started")
        if self._thread is threading.current_thread():
            coroutine.close()
            raise LinkError("a handler must not wait for its own link")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise LinkTimeoutError(f"{self.endpoint.where} did not answer in time") from exc

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Register ``handler`` for ``topic_filter``: before ``start``, or from any thread."""
        if self._loop is None:
            self.link.subscriptions.add(topic_filter, qos, handler)
        else:
            self._call(lambda: self.link.subscribe(topic_filter, handler, qos))

    def subscribe_wait(
        self, topic_filter: str, handler: Handler, qos: int = 1, timeout: float | None = None
    ) -> list[int]:
        """Subscribe while connected and wait for the SUBACK; its return codes."""

        async def subscribe() -> list[int]:
            future = self.link.subscribe(topic_filter, handler, qos)
            if future is None:
                raise NotConnectedError(f"not connected to {self.endpoint.where}")
            return await future

        return self._await(subscribe(), timeout)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish and wait until the broker has it (PUBACK at QoS 1); raise ``LinkError``."""

        async def publish() -> None:
            await self.link.publish(topic, payload, qos, retain)

        self._await(publish(), timeout)

    def publish_all(self, batch: Batch, timeout: float | None = None) -> None:
        """Publish ``batch`` at QoS 1, in order, and wait for every PUBACK."""

        async def publish() -> None:
            futures = [self.link.publish(t, p, 1, r) for t, p, r in batch]
            await asyncio.gather(*futures)

        self._await(publish(), timeout)

    def ack(self, message: Message) -> None:
        """Acknowledge ``message`` (manual_ack), from any thread; dropped if its connection is
        gone (the broker then delivers it again)."""
        if message.mid is None:
            return
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.link.ack, message.mid, message.generation)


def publish_batch(endpoint: Endpoint, batch: Batch, timeout: float = 3.0) -> None:
    """Connect (clean session, one attempt), publish ``batch`` at QoS 1 and wait for every
    PUBACK, disconnect; raise ``LinkError`` when any of it failed."""
    client_id = f"{endpoint.username}-pub-{secrets.token_hex(4)}"
    with ThreadedLink(endpoint, client_id, timeout=timeout, attempts=1) as link:
        link.wait_connected()
        link.publish_all(batch)


def end_session(endpoint: Endpoint, client_id: str, timeout: float = 10.0) -> None:
    """Discard a persistent session at the broker: connect once with clean session, leave.

    A stopped worker's session stays a member of its shared subscription, and Mosquitto keeps
    queueing its share of the traffic for it. Workers that are gone for good (scaled down) must
    be forgotten this way, or that share waits until a worker with that client id returns.
    Raises ``CredentialsRefusedError`` or ``LinkTimeoutError``.
    """
    with ThreadedLink(endpoint, client_id, timeout=timeout, attempts=1) as link:
        link.wait_connected()
