"""The device link end to end: a device publishes over a real broker (embedded amqtt and a
real Mosquitto), the ingest worker writes to a real store (SQLite and a real influxd), and the
API reads it back. Also: the store killed mid-stream, malformed traffic, worker restarts."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloud.db import get_database
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.ingest import metrics
from cloud.ingest.families import FamilyDirectory
from cloud.ingest.worker import IngestWorker
from cloud.telemetry.influx import InfluxStore
from cloud.telemetry.store import TelemetryStore
from firmware.core import contract
from tests.link import Link
from tests.services.influxd import Influxd


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll until ``condition`` holds (behaviour, not speed: the timeout is generous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def endpoint(link: Link) -> Endpoint:
    """The service account's endpoint on ``link``'s broker."""
    return link.endpoint()


@pytest.fixture
def make_worker(link: Link) -> Iterator[Callable[..., IngestWorker]]:
    """Ingest workers on ``link``'s broker, as `ampfleet worker ingest` builds them; their
    broker sessions are ended afterwards so that no later test shares traffic with them."""
    made: list[str] = []

    def make(store: TelemetryStore, data_dir: Path, client_id: str | None = None) -> IngestWorker:
        client_id = client_id or f"ingest-{uuid.uuid4().hex[:8]}"
        made.append(client_id)
        return IngestWorker(
            store,
            endpoint(link),
            client_id,
            data_dir,
            shared_subscriptions=link.kind == "mosquitto",
            batch_size=500,
            flush_ms=100,
            retry_s=0.3,
            families=FamilyDirectory(get_database(link.app)),
        )

    yield make
    for client_id in set(made):
        end_session(endpoint(link), client_id)


@pytest.fixture(params=["sqlite", "influxdb"])
def store(request: pytest.FixtureRequest, link: Link) -> Iterator[TelemetryStore]:
    """The API's own store (SQLite), or a fresh InfluxDB database the API is pointed at."""
    if request.param == "sqlite":
        yield link.app.extensions["ampfleet.telemetry"]
        return
    influxd: Influxd = request.getfixturevalue("influxd")
    influx = InfluxStore(influxd.url, f"t_{uuid.uuid4().hex}", api="v1", timeout_s=5.0)
    saved = link.app.extensions["ampfleet.telemetry"]
    link.app.extensions["ampfleet.telemetry"] = influx
    yield influx
    link.app.extensions["ampfleet.telemetry"] = saved
    influx.drop_database()
    influx.close()


def sample(n: int, ts: int | None = None, extra: dict[str, object] | None = None) -> bytes:
    """A reading of an ac22-3p's meter (the devices' family), valid under its schema."""
    values = {
        "power_w": 7000.0 + n,
        "energy_wh": 1000.0 + n,
        "current_l1_a": 10.0,
        "voltage_l1_v": 230.0,
        "frequency_hz": 50.0,
        **(extra or {}),
    }
    ts = ts or int(time.time() * 1000) - 10_000 + n
    return contract.encode_telemetry(ts, n, values, node="meter")


def test_telemetry_arrives_in_the_store_and_through_the_api(
    link: Link, store: TelemetryStore, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    device_id, password = link.device()
    worker = make_worker(store, tmp_path)
    worker.start()
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            for n in range(50):
                device.publish(contract.topic(device_id, contract.TELEMETRY), sample(n))
        wait_for(lambda: store.count(device_id) == 50, what="50 samples stored")
    finally:
        worker.stop()
    latest = link.admin.get(
        f"/devices/{device_id}/telemetry/latest", query_string={"node": "meter"}
    ).get_json()
    assert latest["values"]["power_w"]["value"] == 7049.0
    assert latest["values"]["voltage_l1_v"]["value"] == 230.0
    history = link.admin.get(
        f"/devices/{device_id}/telemetry",
        query_string={
            "start": "2020-01-01T00:00:00Z",
            "node": "meter",
            "fields": "power_w",
            "limit": 10,
        },
    )
    assert history.status_code == 200 and len(history.get_json()) == 10
    assert 'rel="next"' in history.headers["Link"]
    # The next page has absolute bounds, so that "now" does not move on between pages.
    following = history.headers["Link"].split(">")[0].lstrip("<")
    assert "end=" in following
    page_two = link.admin.get(following)
    assert page_two.status_code == 200 and len(page_two.get_json()) == 10
    assert page_two.get_json()[0]["ts"] > history.get_json()[-1]["ts"]
    # Relative and omitted starts (issue 13): the samples are seconds old.
    for query in ({"start": "-1h"}, {"start": "-15m", "end": "now"}, {}):
        recent = link.admin.get(
            f"/devices/{device_id}/telemetry", query_string={**query, "node": "meter"}
        )
        assert recent.status_code == 200 and len(recent.get_json()) == 50, query
    downsampled = link.admin.get(
        f"/devices/{device_id}/telemetry",
        query_string={
            "start": "2020-01-01T00:00:00Z",
            "node": "meter",
            "fields": "power_w",
            "interval": 3600,
            "aggregate": "max",
        },
    ).get_json()
    assert max(p["values"]["power_w"] for p in downsampled) == 7049.0


def test_a_device_of_another_organization_cannot_be_read(link: Link) -> None:
    device_id, _ = link.device()
    stranger = link.tenant.__class__.create(link.admin)
    _, client = stranger.user("organization-admin")
    assert client.get(f"/devices/{device_id}/telemetry/latest").status_code == 404
    assert client.get(f"/devices/{device_id}/status").status_code == 404


def test_every_accepted_sample_is_stored_once_when_the_store_dies_mid_stream(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    with Influxd(tmp_path / "influxd") as influxd:
        store = InfluxStore(influxd.url, "killed", api="v1", timeout_s=2.0)
        device_id, password = link.device()
        worker = make_worker(store, tmp_path)
        worker.start()
        try:
            wait_for(worker.connection.connected.is_set, what="worker connected")
            spooled_before = metrics.SPOOLED._value.get()
            with link.mqtt(device_id, password).connected() as device:
                topic = contract.topic(device_id, contract.TELEMETRY)
                for n in range(300):
                    device.publish(topic, sample(n))
                    if n == 100:
                        wait_for(lambda: store.count(device_id) >= 50, what="first samples")
                        influxd.kill()  # SIGKILL: no goodbye
                    if n == 200:
                        wait_for(lambda: worker.spool.depth() > 0, what="spooling")
                        influxd.start()
            wait_for(
                lambda: influxd.running and store.count(device_id) == 300,
                timeout=60,
                what="all 300 samples once",
            )
            assert metrics.SPOOLED._value.get() > spooled_before
            wait_for(lambda: worker.spool.depth() == 0, what="spool drained")
        finally:
            worker.stop()
        assert store.count(device_id) == 300
        store.close()


def test_malformed_messages_are_rejected_by_reason_while_good_traffic_flows(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = link.app.extensions["ampfleet.telemetry"]
    device_id, password = link.device()
    worker = make_worker(store, tmp_path)
    worker.start()
    far_future = int(time.time() * 1000) + 86_400_000
    bad = {
        "not_utf8": b"\xff\xfe garbage",
        "not_json": b"{this is not json",
        "bad_type": b'{"v":1,"ts":"yesterday","seq":1,"values":{"power_w":1}}',
        "too_large": json.dumps(
            {"v": 1, "ts": 1, "seq": 1, "values": {"note": "x" * 20000}}
        ).encode(),
        "unknown_field": b'{"v":1,"ts":1795280000000,"seq":1,"values":{"a":1},"extra":1}',
        "future_timestamp": sample(1, ts=far_future),
        "bad_version": b'{"v":9,"ts":1795280000000,"seq":1,"values":{"a":1}}',
    }
    before = {reason: metrics.REJECTED.labels("telemetry", reason)._value.get() for reason in bad}
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            topic = contract.topic(device_id, contract.TELEMETRY)
            for n in range(20):
                device.publish(topic, sample(n))
                payload = list(bad.values())[n % len(bad)]
                device.publish(topic, payload)
            wait_for(lambda: store.count(device_id) == 20, what="the 20 good samples")
        counted = {
            reason: metrics.REJECTED.labels("telemetry", reason)._value.get() - before[reason]
            for reason in bad
        }
        wait_for(
            lambda: all(
                metrics.REJECTED.labels("telemetry", r)._value.get() - before[r] > 0 for r in bad
            ),
            what=f"every reason counted: {counted}",
        )
    finally:
        worker.stop()
    kept = (tmp_path / "rejected.jsonl").read_text().splitlines()
    reasons = {json.loads(line)["reason"] for line in kept}
    assert set(bad) <= reasons


def test_a_restarted_worker_gets_what_was_published_while_it_was_away(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = link.app.extensions["ampfleet.telemetry"]
    device_id, password = link.device()
    worker = make_worker(store, tmp_path, client_id="ingest-restart-" + link.kind)
    worker.start()
    wait_for(worker.connection.connected.is_set, what="worker connected")
    worker.stop()
    with link.mqtt(device_id, password).connected() as device:
        for n in range(40):
            device.publish(contract.topic(device_id, contract.TELEMETRY), sample(n))
    again = make_worker(store, tmp_path, client_id="ingest-restart-" + link.kind)
    again.start()
    try:
        wait_for(lambda: store.count(device_id) == 40, what="the 40 queued samples")
    finally:
        again.stop()


def test_values_the_schema_refuses_are_flagged_and_the_rest_of_the_sample_is_kept(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = link.app.extensions["ampfleet.telemetry"]
    device_id, password = link.device(hardware_family="ac22-3p")
    worker = make_worker(store, tmp_path)
    worker.start()
    bad = {  # parameter -> (value, the reason it is flagged for)
        "no_such_param": (1.0, "unknown_parameter"),
        "temperature_c": (40.0, "wrong_node"),  # the relay's, not the meter's
        "max_current_a": (16.0, "not_telemetry"),  # a setting
        "power_w": ("lots", "wrong_type"),
        "frequency_hz": (99.0, "out_of_range"),  # 45..65
    }
    reasons = {reason for _, reason in bad.values()}
    before = {r: metrics.FLAGGED.labels(r)._value.get() for r in reasons}
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            topic = contract.topic(device_id, contract.TELEMETRY)
            for n, (name, (value, _)) in enumerate(bad.items()):
                device.publish(topic, sample(n, extra={name: value}))
            # Nothing valid at all: flagged, and nothing is stored for it.
            everything_wrong = {"no_such_param": 2.0, "frequency_hz": 10.0}
            ts = int(time.time() * 1000)
            device.publish(topic, contract.encode_telemetry(ts, 99, everything_wrong, node="meter"))
            wait_for(lambda: store.count(device_id) == len(bad), what="the samples, kept")
            wait_for(
                lambda: (
                    metrics.FLAGGED.labels("unknown_parameter")._value.get()
                    - before["unknown_parameter"]
                    >= 2
                ),
                what="the all-wrong sample counted",
            )
    finally:
        worker.stop()
    for reason in reasons:
        assert metrics.FLAGGED.labels(reason)._value.get() > before[reason], reason
    assert store.count(device_id) == len(bad)  # the all-wrong sample stored nothing
    rows = store.history(
        device_id, node="meter", start_ms=0, end_ms=int(time.time() * 1000) + 60_000, limit=100
    )
    stored = {name for row in rows for name in row.values}
    assert stored == {"power_w", "energy_wh", "current_l1_a", "voltage_l1_v", "frequency_hz"}
    assert all(row.values.get("frequency_hz") != 99.0 for row in rows)
    assert all(type(row.values.get("power_w", 0.0)) is float for row in rows)
    kept = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    flagged = {(r["field"], r["reason"]) for r in kept if r.get("flagged")}
    assert {(f"values.{name}", reason) for name, (_, reason) in bad.items()} <= flagged


class FailingStore:
    """A store whose writes fail with an unexpected error (a bug, not an outage)."""

    def __init__(self) -> None:
        self.attempts = 0

    def write(self, samples: object) -> None:
        self.attempts += 1
        raise RuntimeError("a bug in the store")


def redelivered(link: Link, client_id: str) -> list[bytes]:
    """What the broker still holds for ``client_id``'s persistent session: it resends every
    message the session received but did not acknowledge."""
    with link.mqtt(
        link.service_user, link.service_password, client_id=client_id, clean_session=False
    ).connected() as session:
        return [message.payload for message in session.drain(quiet=1.5)]


def test_what_is_stored_is_acknowledged_and_never_comes_back(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = link.app.extensions["ampfleet.telemetry"]
    device_id, password = link.device()
    client_id = f"ingest-acked-{uuid.uuid4().hex[:6]}"
    worker = make_worker(store, tmp_path, client_id=client_id)
    worker.start()
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            for n in range(30):
                device.publish(contract.topic(device_id, contract.TELEMETRY), sample(n))
        wait_for(lambda: store.count(device_id) == 30, what="30 samples stored")
    finally:
        worker.stop()
    assert redelivered(link, client_id) == []


def test_nothing_is_acknowledged_before_it_is_stored(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = FailingStore()
    device_id, password = link.device()
    client_id = f"ingest-unacked-{uuid.uuid4().hex[:6]}"
    worker = make_worker(store, tmp_path, client_id=client_id)
    worker.start()
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            for n in range(10):
                device.publish(contract.topic(device_id, contract.TELEMETRY), sample(n))
        wait_for(lambda: store.attempts >= 2, what="writes tried and failed")
    finally:
        worker.stop(timeout=5)
    now_ms = int(time.time() * 1000)
    back = [
        contract.decode_telemetry(p, now_ms, 16384, 300_000).seq
        for p in redelivered(link, client_id)
    ]
    assert sorted(back) == list(range(10))


class BlockingStore:
    """Wraps a store; writes wait until ``release`` is set (a store that is slow to answer)."""

    def __init__(self, store: TelemetryStore) -> None:
        self.store = store
        self.release = threading.Event()

    def write(self, samples: object) -> None:
        self.release.wait(30)
        self.store.write(samples)  # type: ignore[arg-type]


def test_a_worker_holding_its_queue_size_stops_reading_until_it_has_written(
    link: Link, tmp_path: Path, make_worker: Callable[..., IngestWorker]
) -> None:
    store = link.app.extensions["ampfleet.telemetry"]
    blocking = BlockingStore(store)
    device_id, password = link.device()
    worker = IngestWorker(
        blocking,  # type: ignore[arg-type]
        endpoint(link),
        f"ingest-bp-{uuid.uuid4().hex[:6]}",
        tmp_path,
        shared_subscriptions=link.kind == "mosquitto",
        batch_size=10,
        flush_ms=100,
        queue_size=20,
    )
    worker.start()
    try:
        wait_for(worker.connection.connected.is_set, what="worker connected")
        with link.mqtt(device_id, password).connected() as device:
            for n in range(120):
                device.publish(contract.topic(device_id, contract.TELEMETRY), sample(n))
        wait_for(lambda: worker.connection._paused, what="reading paused")
        held = len(worker._batch)
        assert 20 <= held < 120  # at its bound (plus what one read brought), not everything
        blocking.release.set()
        wait_for(lambda: store.count(device_id) == 120, what="all 120 written in the end")
    finally:
        blocking.release.set()
        worker.stop()
        end_session(endpoint(link), worker.connection.client_id)
