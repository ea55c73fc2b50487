"""Simulated chargers running the real firmware against the real brokers (embedded amqtt and
Mosquitto), the real ingest and configuration workers and the API: telemetry lands in the store
and passes the schema check, a parameter change is applied and reported, and a broker restart
loses none of the samples the charger buffered while it was away."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloud.configuration.worker import ConfigWorker
from cloud.ingest import metrics
from cloud.ingest.worker import IngestWorker
from firmware.host.fleet import Fleet
from tests.configuration.test_parameters import publisher, wait_state, worker
from tests.ingest.test_pipeline import make_worker, wait_for
from tests.link import Link
from tests.services.amqtt_broker import EmbeddedBroker
from tests.services.mosquitto import Mosquitto

__all__ = ["make_worker", "publisher", "worker"]  # fixtures used here, defined there

T = TypeVar("T")


class RunningFleet:
    """A ``Fleet`` on its own asyncio loop in a thread; ``call`` runs a function on that loop
    (the chargers are not thread-safe) and returns its result."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            ready.set()
            await fleet.run(self._stop)

        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(main(),), daemon=True
        )
        self.thread.start()
        ready.wait(10)

    def call(self, function: Callable[[], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)


@pytest.fixture
def running() -> Iterator[Callable[[Fleet], RunningFleet]]:
    started: list[RunningFleet] = []

    def start(fleet: Fleet) -> RunningFleet:
        started.append(RunningFleet(fleet))
        return started[-1]

    yield start
    for fleet in started:
        fleet.stop()


def restart_broker(link: Link, request: pytest.FixtureRequest) -> Callable[[], None]:
    """Stop the link's broker; the function returned starts it again (same port, same data)."""
    if link.kind == "mosquitto":
        server: Mosquitto = request.getfixturevalue("mosquitto")
        server.stop()
        return server.start
    _, broker = request.getfixturevalue("embedded_link_parts")
    embedded: EmbeddedBroker = broker
    embedded.stop()
    return embedded.start


def test_a_simulated_charger_reports_is_configured_and_survives_a_broker_restart(
    link: Link,
    tmp_path: Path,
    make_worker: Callable[..., IngestWorker],
    worker: ConfigWorker,
    running: Callable[[Fleet], RunningFleet],
    request: pytest.FixtureRequest,
) -> None:
    from cloud.db import get_database
    from cloud.ingest.families import FamilyDirectory

    store = link.app.extensions["ampfleet.telemetry"]
    ingest = make_worker(store, tmp_path / "ingest", client_id=f"ingest-{uuid.uuid4().hex[:6]}")
    ingest.families = FamilyDirectory(get_database(link.app))
    ingest.start()
    wait_for(ingest.connection.connected.is_set, what="ingest worker connected")
    flagged_before = sum(metrics.FLAGGED.labels(r)._value.get() for r in FLAG_REASONS)

    device_id, password = link.device(hardware_family="ac22-3p")
    fleet = running(Fleet([(device_id, password)], link.host, link.port, tick_ms=100))
    charger: Any = None
    try:
        wait_for(lambda: fleet.call(lambda: len(fleet.fleet.chargers)) == 1, what="booted")
        charger = fleet.call(lambda: fleet.fleet.chargers[0])
        fleet.call(lambda: charger.ev.plug_in(target_wh=50_000))
        # Power-on jitter (up to 10 s), then a meter reading every 10 s.
        wait_for(lambda: store.count(device_id) >= 3, timeout=60, what="telemetry stored")
        latest = link.admin.get(
            f"/devices/{device_id}/telemetry/latest", query_string={"node": "meter"}
        ).get_json()
        assert latest["values"]["voltage_l1_v"]["value"] > 200
        flagged = sum(metrics.FLAGGED.labels(r)._value.get() for r in FLAG_REASONS)
        assert flagged == flagged_before  # every value obeys the family's schema

        # A parameter change, applied by the firmware and reported.
        _, operator = link.tenant.user("operator")
        change = operator.put(
            f"/devices/{device_id}/parameters/max_current_a", json={"value": 10}
        ).get_json()
        wait_state(operator, device_id, change["id"], "applied")
        assert fleet.call(lambda: charger.master.settings.get("max_current_a")) == 10

        # The broker goes away for longer than a sampling period, then returns.
        start_again = restart_broker(link, request)
        try:
            wait_for(
                lambda: fleet.call(lambda: charger.master.stats()["outbox"]) > 0,
                timeout=30,
                what="samples buffered while the broker is down",
            )
        finally:
            start_again()
        if link.kind == "mosquitto":
            link.sync()  # the restarted broker's accounts, as the provisioner keeps them
        wait_for(lambda: fleet.call(lambda: charger.master.stats()["outbox"]) == 0, timeout=60)
        sent = fleet.call(lambda: fleet.fleet.transports[0].telemetry)
        wait_for(lambda: store.count(device_id) == sent, timeout=30, what=f"{sent} stored")
        assert fleet.call(lambda: charger.master.stats()["dropped"]) == 0
    finally:
        ingest.stop()


FLAG_REASONS = ("unknown_parameter", "not_telemetry", "wrong_node", "wrong_type", "out_of_range")
