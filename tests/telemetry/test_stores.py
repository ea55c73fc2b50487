"""Contract tests of the telemetry stores, run on every backend; then InfluxDB's own cases.

The contract (``cloud/telemetry/store.py``) holds on SQLite and on a real InfluxDB 1.6.7 alike:
same values, same types, same intervals, same refusals. The InfluxDB-only tests cover what
SQLite has no counterpart for: a server that dies and comes back, HTTP errors and timeouts, and
the v2 write path (influxdb-client), which is proven against a real VictoriaMetrics when it is
installed and, always, against a local HTTP server that records the exact request.
"""

from __future__ import annotations

import gzip
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.telemetry.influx import InfluxStore
from cloud.telemetry.lineprotocol import (
    LineEncoder,
    chunks,
    escape_key,
    escape_string_value,
    quote_ident,
    quote_literal,
)
from cloud.telemetry.sqlite import SQLiteStore
from cloud.telemetry.store import (
    InvalidSampleError,
    Point,
    Sample,
    StoreRejectedError,
    StoreUnavailableError,
    TelemetryStore,
    Value,
    check_sample,
)
from tests.services.influxd import VICTORIA_METRICS, Influxd, VictoriaMetrics, free_port
from tests.telemetry.conftest import influx_store

# A minute boundary (so also a 10 s boundary) in November 2023.
T0 = 1_699_999_980_000


def sample(
    offset_ms: int = 0,
    device: str = "dev-1",
    node: str = "master",
    seq: int | None = None,
    **values: Any,
) -> Sample:
    """A sample ``offset_ms`` after T0."""
    return Sample(device, node, T0 + offset_ms, offset_ms if seq is None else seq, values)


def typed(values: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """Values with their exact types, so that 2 and 2.0 (and 1 and True) compare unequal."""
    return {k: (type(v), v) for k, v in values.items()}


# -- contract: round trip -----------------------------------------------------------------

MIXED: dict[str, Value] = {
    "voltage": 230.5,
    "integral_float": 2.0,
    "huge_float": 1e21,
    "tiny_float": -1.5e-7,
    "energy_wh": 2**62 + 1,
    "negative": -42,
    "zero": 0,
    "charging": True,
    "locked": False,
    "state": 'Charging "fast" \\ ü€😀\nsecond line',
    "empty": "",
}


def test_round_trip_keeps_values_and_types(store: TelemetryStore) -> None:
    store.write([Sample("dev-1", "master", T0, 0, MIXED)])

    latest = store.latest("dev-1")
    assert {k: (ts, *typed({k: v})[k]) for k, (ts, v) in latest.items()} == {
        k: (T0, type(v), v) for k, v in MIXED.items()
    }
    (point,) = store.history("dev-1", T0, T0 + 1)
    assert point.ts_ms == T0
    assert typed(point.values) == typed(MIXED)
    assert store.count() == 1
    assert store.count("dev-1") == 1
    assert store.count("other") == 0


def test_empty_store_answers_empty(store: TelemetryStore) -> None:
    assert store.latest("nobody") == {}
    assert store.history("nobody", 0, T0 * 2) == []
    assert store.history("nobody", 0, T0 * 2, interval_s=60, aggregate="mean") == []
    assert store.count() == 0
    assert store.ping() is True
    store.write([])
    assert store.count() == 0


# -- contract: idempotence ----------------------------------------------------------------


def test_rewrite_keeps_one_copy_and_last_values_win(store: TelemetryStore) -> None:
    store.write([sample(0, seq=1, a=1.0, b="first", c=10)])
    store.write([sample(0, seq=2, a=2.0, b="second", c=20)])
    assert store.count() == 1
    assert store.latest("dev-1") == {"a": (T0, 2.0), "b": (T0, "second"), "c": (T0, 20)}

    # A rewrite that lacks a value keeps the earlier one (InfluxDB's point semantics).
    store.write([sample(0, seq=3, a=3.0)])
    assert store.history("dev-1", T0, T0 + 1) == [Point(T0, {"a": 3.0, "b": "second", "c": 20})]

    # Replaying a whole batch (what a retry after StoreUnavailableError does) adds nothing.
    batch = [sample(i * 1000, a=float(i)) for i in range(1, 50)]
    store.write(batch)
    store.write(batch)
    assert store.count() == 50


def test_same_timestamp_on_other_node_or_device_is_another_sample(store: TelemetryStore) -> None:
    store.write(
        [
            sample(0, a=1.0),
            sample(0, node="meter", a=2.0),
            sample(0, device="dev-2", a=3.0),
        ]
    )
    assert store.count() == 3
    assert store.count("dev-1") == 2
    assert store.latest("dev-1", "meter") == {"a": (T0, 2.0)}
    assert store.latest("dev-2") == {"a": (T0, 3.0)}


# -- contract: latest ---------------------------------------------------------------------


def test_latest_takes_each_parameter_from_its_newest_sample(store: TelemetryStore) -> None:
    store.write(
        [
            sample(0, a=1.0, b=10, c="x"),
            sample(1000, a=2.0),
            sample(2000, b=30),
            # Written later but older: must not win.
            sample(-5000, a=-1.0, b=-1, c="old", d=True),
            sample(3000, node="meter", a=99.0, e=1),
        ]
    )
    assert store.latest("dev-1") == {
        "a": (T0 + 1000, 2.0),
        "b": (T0 + 2000, 30),
        "c": (T0, "x"),
        "d": (T0 - 5000, True),
    }
    assert store.latest("dev-1", node="master") == store.latest("dev-1")
    assert store.latest("dev-1", node="meter") == {"a": (T0 + 3000, 99.0), "e": (T0 + 3000, 1)}
    assert store.latest("dev-1", node="relay") == {}


# -- contract: history --------------------------------------------------------------------


@pytest.fixture
def ten_seconds(store: TelemetryStore) -> TelemetryStore:
    """Samples every second for 10 s, written out of order, plus noise on other series."""
    samples = [sample(i * 1000, a=float(i), b=i * 10) for i in range(10)]
    samples.reverse()
    samples += [sample(i * 1000, node="meter", a=100.0 + i) for i in range(10)]
    samples += [sample(i * 1000, device="dev-2", a=200.0 + i) for i in range(10)]
    store.write(samples)
    return store


def test_history_is_half_open_and_ascending(ten_seconds: TelemetryStore) -> None:
    points = ten_seconds.history("dev-1", T0 + 2000, T0 + 5000)
    assert points == [
        Point(T0 + 2000, {"a": 2.0, "b": 20}),
        Point(T0 + 3000, {"a": 3.0, "b": 30}),
        Point(T0 + 4000, {"a": 4.0, "b": 40}),
    ]
    assert ten_seconds.history("dev-1", T0 + 2000, T0 + 2000) == []
    assert len(ten_seconds.history("dev-1", 0, T0 * 2)) == 10


def test_history_selects_fields(ten_seconds: TelemetryStore) -> None:
    ten_seconds.write([sample(20_000, c="only c")])
    points = ten_seconds.history("dev-1", T0, T0 + 30_000, fields=["b"])
    assert [p.ts_ms for p in points] == [T0 + i * 1000 for i in range(10)]
    assert all(set(p.values) == {"b"} for p in points)
    # A sample that has none of the fields is no point; one that has some gives just those.
    assert ten_seconds.history("dev-1", T0, T0 + 30_000, fields=["c", "nonexistent"]) == [
        Point(T0 + 20_000, {"c": "only c"})
    ]
    # The limit counts points, not samples that lack the fields.
    assert ten_seconds.history("dev-1", T0, T0 + 30_000, fields=["c"], limit=1) == [
        Point(T0 + 20_000, {"c": "only c"})
    ]
    assert ten_seconds.history("dev-1", T0, T0 + 30_000, fields=["nonexistent"]) == []
    assert ten_seconds.history("dev-1", T0, T0 + 30_000, fields=[]) == []
    # Reserved names are no parameters: selecting the tags or seq yields nothing.
    assert ten_seconds.history("dev-1", T0, T0 + 30_000, fields=["device", "seq", "time"]) == []


def test_history_selects_node_and_limits(ten_seconds: TelemetryStore) -> None:
    meter = ten_seconds.history("dev-1", T0, T0 + 10_000, node="meter")
    assert [p.values for p in meter] == [{"a": 100.0 + i} for i in range(10)]
    first = ten_seconds.history("dev-1", T0, T0 + 10_000, limit=3)
    assert [p.ts_ms for p in first] == [T0, T0 + 1000, T0 + 2000]


def test_downsampling_aligns_intervals_on_the_epoch(store: TelemetryStore) -> None:
    # Values at 0 s, 4 s, 9.999 s | 10 s (boundary: next interval), 15 s | nothing | 30 s.
    offsets = [0, 4000, 9999, 10_000, 15_000, 30_000]
    store.write(
        [
            sample(t, a=float(i + 1), n=(i + 1) * 10, flag=True, text="t")
            for i, t in enumerate(offsets)
        ]
    )
    store.write([sample(31_000, node="meter", a=1000.0)])

    def agg(kind: str, start: int = 0, end: int = 40_000, **kw: Any) -> list[Point]:
        return store.history("dev-1", T0 + start, T0 + end, interval_s=10, aggregate=kind, **kw)

    assert agg("mean") == [
        Point(T0, {"a": 2.0, "n": 20.0}),
        Point(T0 + 10_000, {"a": 4.5, "n": 45.0}),
        Point(T0 + 30_000, {"a": 6.0, "n": 60.0}),
    ]
    assert all(type(v) is float for p in agg("mean") for v in p.values.values())
    assert typed(agg("min")[1].values) == typed({"a": 4.0, "n": 40})
    assert typed(agg("max")[0].values) == typed({"a": 3.0, "n": 30})
    # A start inside an interval: the interval keeps its aligned start, holds only [start, ..).
    assert agg("mean", start=5000, end=15_000) == [
        Point(T0, {"a": 3.0, "n": 30.0}),
        Point(T0 + 10_000, {"a": 4.0, "n": 40.0}),
    ]
    assert agg("max", fields=["n", "text", "flag"]) == [
        Point(T0, {"n": 30}),
        Point(T0 + 10_000, {"n": 50}),
        Point(T0 + 30_000, {"n": 60}),
    ]
    # 7 s does not divide a minute: intervals still start at multiples of 7 s since 1970.
    seven = store.history("dev-1", T0, T0 + 40_000, fields=["n"], interval_s=7, aggregate="min")
    assert [p.ts_ms % 7000 for p in seven] == [0] * len(seven)
    assert seven[0] == Point(T0 // 7000 * 7000, {"n": 10})
    assert agg("mean", fields=["text"]) == []
    assert agg("mean", limit=2) == agg("mean")[:2]
    assert store.history(
        "dev-1", T0, T0 + 60_000, node="meter", interval_s=60, aggregate="min"
    ) == [Point(T0, {"a": 1000.0})]


def test_history_refuses_bad_arguments(store: TelemetryStore) -> None:
    with pytest.raises(ValueError, match="go together"):
        store.history("dev-1", 0, 1, interval_s=10)
    with pytest.raises(ValueError, match="aggregate"):
        store.history("dev-1", 0, 1, interval_s=10, aggregate="median")
    with pytest.raises(ValueError, match="limit"):
        store.history("dev-1", 0, 1, limit=0)


# -- contract: names that need escaping, and injection ----------------------------------

AWKWARD_DEVICE = "dev 1,loc=a\"b'c\\d=e ü€😀"
AWKWARD_NODE = "me ter,x=y"
INJECTED_FIELD = 'x") FROM telemetry; DROP DATABASE x; --'
AWKWARD_FIELDS: dict[str, Value] = {
    "a b": 1.0,
    "c,d": 2,
    "e=f": True,
    'g"h': 'va"l',
    "i'j": "v'al",
    "k\\l": "back\\slash",
    "m\\n": 3.5,  # a backslash before an ordinary letter
    "ü€😀": "ünïcode",
    INJECTED_FIELD: 4.0,
}


def test_awkward_names_round_trip(store: TelemetryStore) -> None:
    store.write(
        [
            Sample(AWKWARD_DEVICE, AWKWARD_NODE, T0, 1, AWKWARD_FIELDS),
            Sample(AWKWARD_DEVICE, "master", T0 + 1000, 2, {"a b": 5.0}),
            sample(0, a=1.0),
        ]
    )
    assert store.latest(AWKWARD_DEVICE, AWKWARD_NODE) == {
        k: (T0, v) for k, v in AWKWARD_FIELDS.items()
    }
    assert store.latest(AWKWARD_DEVICE) == {"a b": (T0 + 1000, 5.0)}
    assert store.history(AWKWARD_DEVICE, T0, T0 + 1, node=AWKWARD_NODE) == [
        Point(T0, dict(AWKWARD_FIELDS))
    ]
    assert store.history(AWKWARD_DEVICE, T0, T0 + 1, fields=['g"h', "k\\l"], node=AWKWARD_NODE) == [
        Point(T0, {'g"h': 'va"l', "k\\l": "back\\slash"})
    ]
    assert store.history(
        AWKWARD_DEVICE, T0, T0 + 60_000, node=AWKWARD_NODE, interval_s=60, aggregate="max"
    ) == [Point(T0, {"a b": 1.0, "c,d": 2, "m\\n": 3.5, INJECTED_FIELD: 4.0})]
    assert store.count(AWKWARD_DEVICE) == 2
    assert store.count() == 3


INJECTIONS = [
    "dev-1' OR \"device\" =~ /.*/ OR 'a'='a",
    "x'; DROP DATABASE \"x\"; SELECT '",
    "dev-1\\",
    "dev-1\\' OR '1'='1",
    "/.*/",
    "*",
]


@pytest.mark.parametrize("evil", INJECTIONS)
def test_queries_cannot_be_injected(store: TelemetryStore, evil: str) -> None:
    store.write([sample(0, a=1.0), sample(0, device="dev-2", b=2.0)])
    assert store.latest(evil) == {}
    assert store.latest("dev-1", node=evil) == {}
    assert store.history(evil, 0, T0 * 2) == []
    assert store.history("dev-1", 0, T0 * 2, fields=[evil, 'a", "b']) == []
    assert store.history(evil, 0, T0 * 2, interval_s=60, aggregate="mean") == []
    assert store.count(evil) == 0
    assert store.count() == 2  # nothing dropped


# -- contract: what no backend stores ----------------------------------------------------

INVALID = [
    pytest.param(sample(0, a=float("nan")), id="nan"),
    pytest.param(sample(0, a=float("inf")), id="inf"),
    pytest.param(sample(0, a=2**63), id="int-too-big"),
    pytest.param(sample(0, a=None), id="none"),
    pytest.param(sample(0, a=[1]), id="list"),
    pytest.param(sample(0), id="no-values"),
    pytest.param(sample(0, seq=2**64, a=1.0), id="seq-too-big"),
    pytest.param(Sample("dev-1", "master", -1, 0, {"a": 1.0}), id="before-1970"),
    pytest.param(Sample("dev-1", "master", 1.5, 0, {"a": 1.0}), id="float-ts"),  # type: ignore[arg-type]
    pytest.param(Sample("", "master", T0, 0, {"a": 1.0}), id="empty-device"),
    pytest.param(Sample("dev-1", "", T0, 0, {"a": 1.0}), id="empty-node"),
    pytest.param(Sample("dev\n1", "master", T0, 0, {"a": 1.0}), id="newline-device"),
    pytest.param(Sample("dev-1\\", "master", T0, 0, {"a": 1.0}), id="trailing-backslash"),
    pytest.param(Sample("dev\\,1", "master", T0, 0, {"a": 1.0}), id="backslash-comma"),
    pytest.param(Sample("dev\\\\1", "master", T0, 0, {"a": 1.0}), id="double-backslash"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"": 1.0}), id="empty-field"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"a\tb": 1.0}), id="tab-in-field"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"seq": 1.0}), id="reserved-seq"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"time": 1.0}), id="reserved-time"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"device": 1.0}), id="reserved-device"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"node": 1.0}), id="reserved-node"),
    pytest.param(Sample("dev-1", "master", T0, 0, {"_value": 1.0}), id="reserved-underscore"),
]


@pytest.mark.parametrize("bad", INVALID)
def test_invalid_sample_fails_the_batch_before_any_write(
    store: TelemetryStore, bad: Sample
) -> None:
    with pytest.raises(InvalidSampleError):
        check_sample(bad)
    with pytest.raises(InvalidSampleError):
        store.write([sample(-1000, a=1.0), bad])
    assert store.count() == 0


def test_a_parameter_keeps_its_type(store: TelemetryStore) -> None:
    store.write([sample(0, a=1.0, s="x")])
    for value in (1, True, "1"):
        with pytest.raises(StoreRejectedError, match="conflict") as caught:
            store.write([sample(1000, a=value)])
        assert not isinstance(caught.value, InvalidSampleError)
    # Another device cannot change it either: a parameter has one type fleet-wide.
    with pytest.raises(StoreRejectedError, match="conflict"):
        store.write([sample(0, device="dev-2", s=5)])
    assert store.count() == 1
    assert store.latest("dev-1") == {"a": (T0, 1.0), "s": (T0, "x")}


# -- contract: volume and concurrency ----------------------------------------------------


def test_large_batch_in_one_write(store: TelemetryStore) -> None:
    samples = [
        Sample(
            f"dev-{i % 500:04d}",
            "master",
            T0 + (i // 500) * 1000,
            i,
            {f"p{j}": float(i + j) for j in range(9)} | {"energy_wh": i},
        )
        for i in range(20_000)
    ]
    store.write(samples)
    assert store.count() == 20_000
    assert store.count("dev-0007") == 40
    last = samples[-1]
    assert store.latest(last.device_id) == {k: (last.ts_ms, v) for k, v in last.values.items()}


def test_one_writer_and_concurrent_readers(store: TelemetryStore) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                store.latest("dev-1")
                store.history("dev-1", T0, T0 + 10**7, limit=50)
                store.history("dev-1", T0, T0 + 10**7, interval_s=60, aggregate="max")
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for batch in range(20):
            store.write([sample((batch * 100 + i) * 1000, a=float(i), n=i) for i in range(100)])
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert errors == []
    assert store.count() == 2000
    assert store.latest("dev-1")["a"] == (T0 + 1_999_000, 99.0)


def test_sqlite_readers_in_other_connections_see_committed_data(tmp_path: Path) -> None:
    writer = SQLiteStore(tmp_path / "telemetry.db")
    reader = SQLiteStore(tmp_path / "telemetry.db")  # as another process would open it
    try:
        writer.write([sample(0, a=1.0)])
        assert reader.latest("dev-1") == {"a": (T0, 1.0)}
        writer.write([sample(1000, a=2.0)])
        assert reader.latest("dev-1") == {"a": (T0 + 1000, 2.0)}
        assert (tmp_path / "telemetry.db-wal").exists()
    finally:
        writer.close()
        reader.close()


READER_PROCESS = """
import sys, time
from cloud.telemetry.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
store.latest("dev-1")
print("ready", flush=True)
reads, newest, deadline = 0, None, time.monotonic() + 30
while newest != 99.0 and time.monotonic() < deadline:
    newest = store.latest("dev-1")["a"][1]
    store.history("dev-1", 0, 2**40, interval_s=60, aggregate="mean")
    reads += 1
print(reads, newest)
"""


def test_sqlite_reader_processes_while_one_writes(tmp_path: Path) -> None:
    path = tmp_path / "telemetry.db"
    writer = SQLiteStore(path)
    writer.write([sample(0, a=0.0)])
    root = Path(__file__).resolve().parents[2]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER_PROCESS, str(path)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        # Write only once every reader reads, so that reads and writes overlap.
        assert [reader.stdout.readline() for reader in readers] == ["ready\n"] * 2  # type: ignore[union-attr]
        for batch in range(1, 100):
            writer.write([sample(batch * 1000 + i, a=float(batch), n=i) for i in range(50)])
    finally:
        writer.close()
    for reader in readers:
        out, err = reader.communicate(timeout=60)
        assert reader.returncode == 0, err
        reads, newest = out.split()
        assert int(reads) > 0
        assert newest == "99.0"


# -- line protocol and InfluxQL quoting (I/O-free) ---------------------------------------


def test_line_protocol_encoding() -> None:
    (line,) = LineEncoder().encode(
        [
            Sample(
                "dev 1,a=b",
                "meter",
                T0,
                7,
                {"v l1": 230.5, "n": -3, "ok": True, "s": 'say "hi" \\o/', "z": 1e21},
            )
        ]
    )
    assert line == (
        r"telemetry,device=dev\ 1\,a\=b,node=meter v\ l1=230.5,n=-3i,ok=true,"
        r's="say \"hi\" \\o/",z=1e+21,seq=7i ' + str(T0)
    )
    assert escape_key("a,b=c d") == r"a\,b\=c\ d"
    assert escape_string_value('a"b\\') == 'a\\"b\\\\'
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_literal("it's \\") == "'it\\'s \\\\'"


def test_chunks_bound_lines_and_size() -> None:
    def sizes(lines: list[str], size: int, max_chars: int) -> list[int]:
        return [len(body.split(b"\n")) for body in chunks(lines, size, max_chars)]

    assert sizes(["x" * 10] * 12, 5, 1000) == [5, 5, 2]
    assert sizes(["x" * 10] * 6, 5, 30) == [2, 2, 2]
    assert sizes(["x" * 100] * 2, 5, 30) == [1, 1]  # a long line still goes, alone
    assert list(chunks([], 5)) == []


# -- InfluxDB only -----------------------------------------------------------------------


def test_influxd_killed_then_restarted(tmp_path: Path) -> None:
    with Influxd(tmp_path / "influxd") as server:
        store = influx_store(server, timeout_s=1.0)
        try:
            store.write([sample(i * 1000, a=float(i)) for i in range(100)])

            server.kill()
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                store.write([sample(100_000, a=100.0)])
            assert time.monotonic() - started < 2.0
            assert store.ping() is False
            with pytest.raises(StoreUnavailableError):
                store.latest("dev-1")

            server.start()
            assert store.ping() is True
            store.write([sample(100_000, a=100.0)])
            assert store.count() == 101  # what was written before the kill survived (WAL)
            assert store.latest("dev-1") == {"a": (T0 + 100_000, 100.0)}
        finally:
            store.close()


def test_influxd_instances_run_side_by_side(influxd: Influxd, tmp_path: Path) -> None:
    with Influxd(tmp_path / "second") as second:
        assert second.port != influxd.port
        assert second.rpc_port != influxd.rpc_port
        store = InfluxStore(second.url, "x", api="v1")
        assert store.ping()
        store.close()


class Recorder(http.server.ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that records each request and answers as told."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        self.requests: list[dict[str, Any]] = []
        self.status = 204
        self.answer = b""
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecorderHandler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urllib.parse.urlsplit(self.path)
        self.server.requests.append(
            {
                "path": url.path,
                "query": dict(urllib.parse.parse_qsl(url.query)),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_v2_write_sends_gzip_line_protocol_through_influxdb_client(recorder: Recorder) -> None:
    store = InfluxStore(recorder.url, "fleet", api="v2", org="acme", token="s3cret")
    samples = [sample(i, a=float(i), n=i, s="x y") for i in range(12_000)]
    try:
        store.write(samples)
    finally:
        store.close()
    assert [len(gzip.decompress(r["body"]).splitlines()) for r in recorder.requests] == [
        5000,
        5000,
        2000,
    ]
    first = recorder.requests[0]
    assert first["path"] == "/api/v2/write"
    assert first["query"] == {"org": "acme", "bucket": "fleet", "precision": "ms"}
    assert first["headers"]["authorization"] == "Token s3cret"
    assert first["headers"]["content-encoding"] == "gzip"
    assert first["headers"]["content-type"].startswith("text/plain")
    lines = b"".join(gzip.decompress(r["body"]) + b"\n" for r in recorder.requests)
    assert lines.decode().splitlines() == LineEncoder().encode(samples)


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, StoreRejectedError),
        (413, StoreRejectedError),
        (422, StoreRejectedError),
        (401, StoreUnavailableError),
        (404, StoreUnavailableError),
        (429, StoreUnavailableError),
        (500, StoreUnavailableError),
        (503, StoreUnavailableError),
    ],
)
def test_http_errors_map_to_store_errors(
    recorder: Recorder, api: str, status: int, error: type[Exception]
) -> None:
    recorder.status = status
    recorder.answer = json.dumps(
        {"code": "x", "message": "told you so", "error": "told you so"}
    ).encode()
    store = InfluxStore(recorder.url, "fleet", api=api)
    try:
        with pytest.raises(error, match="told you so") as caught:
            store.write([sample(0, a=1.0)])
    finally:
        store.close()
    assert caught.value.status == status  # type: ignore[attr-defined]
    if api == "v1" and status == 404:
        # "database not found" only triggers CREATE DATABASE; any other 404 does not.
        assert len(recorder.requests) == 1


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_unreachable_or_slow_server_is_unavailable(recorder: Recorder, api: str) -> None:
    closed = InfluxStore(f"http://127.0.0.1:{free_port()}", "fleet", api=api, timeout_s=0.5)
    slow = InfluxStore(recorder.url, "fleet", api=api, timeout_s=0.3)
    recorder.delay = 2.0
    try:
        with pytest.raises(StoreUnavailableError):
            closed.write([sample(0, a=1.0)])
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            slow.write([sample(0, a=1.0)])
        assert time.monotonic() - started < 1.5
    finally:
        closed.close()
        slow.close()


def test_v2_write_reaches_victoria_metrics(tmp_path: Path) -> None:
    """influxdb-client's /api/v2/write, over real HTTP, into a real line-protocol server."""
    if not Path(VICTORIA_METRICS).exists():
        pytest.skip(f"{VICTORIA_METRICS} not installed (apt-get install victoria-metrics)")
    now = int(time.time() * 1000) // 1000 * 1000
    samples = [
        Sample(AWKWARD_DEVICE, "master", now - 10_000 + i * 1000, i, {"v": 230.0 + i, "n": i})
        for i in range(10)
    ]
    with VictoriaMetrics(tmp_path / "vm") as server:
        store = InfluxStore(server.url, "fleet", api="v2", org="acme", token="t")
        try:
            store.write(samples)
        finally:
            store.close()
        urllib.request.urlopen(server.url + "/internal/force_flush").close()
        query = urllib.parse.urlencode({"match[]": '{__name__=~"telemetry_.*"}'})
        with urllib.request.urlopen(f"{server.url}/api/v1/export?{query}") as response:
            exported = [json.loads(line) for line in response.read().splitlines()]
    by_name = {series["metric"]["__name__"]: series for series in exported}
    assert set(by_name) == {"telemetry_v", "telemetry_n", "telemetry_seq"}
    voltage = by_name["telemetry_v"]
    assert voltage["metric"]["device"] == AWKWARD_DEVICE
    assert voltage["metric"]["node"] == "master"
    assert voltage["timestamps"] == [s.ts_ms for s in samples]
    assert voltage["values"] == [230.0 + i for i in range(10)]


def test_v1_creates_the_database_on_first_write(influxd: Influxd) -> None:
    store = influx_store(influxd)
    try:
        assert store.count() == 0  # reading a database that does not exist yet: empty
        store.write([sample(0, a=1.0)])
        assert store.count() == 1
    finally:
        store.drop_database()
        store.close()


def test_database_names_are_quoted(influxd: Influxd) -> None:
    store = InfluxStore(influxd.url, f'odd "db" {uuid.uuid4().hex}', api="v1")
    try:
        store.write([sample(0, a=1.0)])
        assert store.count() == 1
    finally:
        store.drop_database()
        store.close()
