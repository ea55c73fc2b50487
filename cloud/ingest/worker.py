"""``ampfleet worker ingest``: telemetry from the broker into the telemetry store.

One asyncio loop (its own thread) receives, decodes, checks and batches (``receiver``, gmqtt);
one executor thread does the blocking I/O: writing a batch to the store, or to the durable spool
while the store is down, and draining the spool when it is back. A message is acknowledged to
the broker only after its sample is stored or spooled. While a batch is being written the next
one fills; once the worker holds ``queue_size`` samples it stops reading the socket, so the
broker holds the rest (back-pressure instead of a worker growing without bound).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from pathlib import Path

from cloud.devicelink.endpoint import Endpoint, shared
from cloud.devicelink.rejects import Rejected, RejectLog
from cloud.ingest import metrics
from cloud.ingest.core import Decoder
from cloud.ingest.families import FamilyDirectory
from cloud.ingest.receiver import Receiver
from cloud.ingest.spool import Spool
from cloud.telemetry.store import (
    Sample,
    StoreRejectedError,
    StoreUnavailableError,
    TelemetryStore,
)
from firmware.core import contract

log = logging.getLogger(__name__)

Item = tuple[int | None, int, Sample]  # (packet id, connection generation, sample)


class IngestWorker:
    """Subscribes to every device's telemetry and writes it to the store in batches."""

    def __init__(
        self,
        store: TelemetryStore,
        endpoint: Endpoint,
        client_id: str,
        data_dir: Path,
        shared_subscriptions: bool,
        batch_size: int = 5000,
        flush_ms: int = 1000,
        queue_size: int = 100_000,
        max_payload_bytes: int = 16384,
        max_skew_ms: int = 300_000,
        retry_s: float = 2.0,
        families: FamilyDirectory | None = None,
    ) -> None:
        self.store = store
        # None: values are not checked against a parameter schema (tests of the pipeline alone).
        self.families = families
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.queue_size = max(queue_size, batch_size)
        self.retry_s = retry_s
        self.decoder = Decoder(max_payload_bytes, max_skew_ms)
        self.spool = Spool(data_dir / "spool" / f"{client_id}.db")
        self.rejects = RejectLog(data_dir / "rejected.jsonl")
        topic = shared(contract.topic("+", contract.TELEMETRY), "ingest", shared_subscriptions)
        # A persistent session (clean session false), acknowledged only once stored: what the
        # broker has not seen acknowledged it delivers again after a crash or a reconnect.
        self.connection = Receiver(endpoint, client_id, (topic, 1), self._on_message)
        # Bound once: looking a labelled child up costs a lock and a dict per message.
        self._received = metrics.RECEIVED.labels(contract.TELEMETRY)
        self._store_down_until = 0.0
        self._batch: list[Item] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-loop", daemon=True)
        # One thread for every blocking call on the store and the spool: they keep their order.
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ingest-store")

    def start(self) -> None:
        """Connect and start writing."""
        metrics.SPOOL_DEPTH.set(self.spool.depth())
        if self.families is not None:
            self.families.preload()
        self._thread.start()
        self._ready.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, write and acknowledge what is held, then disconnect.

        The subscription stays: the broker keeps queueing for this persistent session while
        the worker is away, and delivers again what arrives now unacknowledged.
        """
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        self._io.shutdown(wait=True)
        self.spool.close()
        self.rejects.close()

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._full = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ready.set()
        connecting = asyncio.create_task(self.connection.run(self._stopping))
        try:
            await self._write_loop()
        finally:
            self._closing = True  # from here on, nothing new is taken (nor acknowledged)
            connecting.cancel()
            await self.connection.close()

    async def _write_loop(self) -> None:
        assert self._loop is not None and self._full is not None and self._stopping is not None
        while True:
            stopping = self._stopping.is_set()
            if not stopping and len(self._batch) < self.batch_size:
                waits = [asyncio.ensure_future(e.wait()) for e in (self._full, self._stopping)]
                await asyncio.wait(waits, timeout=self.flush_s, return_when="FIRST_COMPLETED")
                for waiting in waits:
                    waiting.cancel()
            if self._stopping.is_set():
                self._closing = True
            self._full.clear()
            batch, self._batch = self._batch, []
            self.connection.pause(False)
            metrics.QUEUE_DEPTH.set(len(batch))
            if batch:
                samples = [sample for _, _, sample in batch]
                try:
                    await self._loop.run_in_executor(self._io, self._write, samples)
                except Exception:  # a bug, or the spool's disk failing: keep, do not acknowledge
                    log.exception("could not store or spool %d samples; retrying", len(samples))
                    if self._closing:
                        return  # unacknowledged: the broker delivers them again
                    self._batch = batch + self._batch
                    await asyncio.sleep(self.retry_s)
                    continue
                for mid, generation, _ in batch:
                    if mid is not None:
                        self.connection.ack(mid, generation)
            await self._loop.run_in_executor(self._io, self._drain_spool)
            if self._closing and not self._batch:
                return

    def _on_message(self, topic: str | bytes, payload: bytes, mid: int | None, gen: int) -> None:
        if self._closing:
            return  # not acknowledged: the broker delivers it again to the next session
        self._received.inc()
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")  # not UTF-8: parse_topic refuses it
        result = self.decoder.telemetry(topic, payload, int(time.time() * 1000))
        if isinstance(result, Rejected):
            self.rejects.reject(contract.TELEMETRY, topic, payload, result)
            if mid is not None:  # never redeliver what can never be accepted
                self.connection.ack(mid, gen)
            return
        if self.families is not None:
            checked = self._checked(topic, result)
            if checked is None:  # every value flagged: nothing left to store
                if mid is not None:
                    self.connection.ack(mid, gen)
                return
            result = checked
        self._batch.append((mid, gen, result))
        held = len(self._batch)
        if held >= self.batch_size and self._full is not None:
            self._full.set()
        if held >= self.queue_size:
            self.connection.pause(True)

    def _checked(self, topic: str, sample: Sample) -> Sample | None:
        """``sample`` without the values its family's schema refuses (flagged and counted)."""
        assert self.families is not None
        rules = self.families.rules(sample.device_id)
        if isinstance(rules, str):
            metrics.UNCHECKED.labels(rules).inc()
            return sample
        kept, flags = rules.check(sample.node, sample.values)
        if not flags:
            return sample
        for flag in flags:
            self.rejects.flag(topic, sample.node, sample.values[flag.parameter], flag)
        return dataclasses.replace(sample, values=kept) if kept else None

    # -- the store thread ------------------------------------------------------------------
    def _write(self, samples: list[Sample]) -> None:
        """Store ``samples``, or spool them: either way they may be acknowledged after."""
        if time.monotonic() < self._store_down_until or self.spool.depth():
            # The store is known to be down, or older batches wait: keep order, spool.
            self._to_spool(samples)
        else:
            started = time.perf_counter()
            try:
                self.store.write(samples)
            except StoreUnavailableError as exc:
                metrics.STORE_ERRORS.labels("unavailable").inc()
                log.warning("telemetry store unavailable (%s): spooling", exc)
                self._store_down_until = time.monotonic() + self.retry_s
                self._to_spool(samples)
            except StoreRejectedError as exc:
                metrics.STORE_ERRORS.labels("rejected").inc()
                log.warning("store refused a batch (%s): finding the culprits", exc)
                self._write_halves(samples)
            else:
                metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
                metrics.WRITTEN.inc(len(samples))

    def _write_halves(self, samples: list[Sample]) -> None:
        """Rewrite a refused batch by halves until the refused samples are isolated; only those
        are rejected. Rewrites are harmless: the store keeps one copy per device/node/ts."""
        try:
            self.store.write(samples)
        except StoreRejectedError as exc:
            if len(samples) == 1:
                sample = samples[0]
                why = Rejected("store_rejected", None, str(exc)[:300])
                excerpt = repr(dict(sample.values)).encode()
                self.rejects.reject(
                    contract.TELEMETRY,
                    contract.topic(sample.device_id, contract.TELEMETRY),
                    excerpt,
                    why,
                )
                return
            middle = len(samples) // 2
            self._write_halves(samples[:middle])
            self._write_halves(samples[middle:])
        except StoreUnavailableError:
            self._store_down_until = time.monotonic() + self.retry_s
            self._to_spool(samples)
        else:
            metrics.WRITTEN.inc(len(samples))

    def _to_spool(self, samples: list[Sample]) -> None:
        self.spool.put(samples)
        metrics.SPOOLED.inc(len(samples))
        metrics.SPOOL_DEPTH.set(self.spool.depth())

    def _drain_spool(self) -> None:
        while time.monotonic() >= self._store_down_until:
            oldest = self.spool.peek()
            if oldest is None:
                return
            batch_id, samples = oldest
            try:
                self.store.write(samples)
            except StoreUnavailableError:
                self._store_down_until = time.monotonic() + self.retry_s
                return
            except StoreRejectedError as exc:
                log.error("store refused a spooled batch of %d samples: %s", len(samples), exc)
            else:
                metrics.WRITTEN.inc(len(samples))
            self.spool.remove(batch_id)
            metrics.SPOOL_DEPTH.set(self.spool.depth())
            log.info("wrote a spooled batch of %d samples", len(samples))
