"""The telemetry store: where chargers' samples are kept and read back.

One interface, :class:`TelemetryStore`, with two backends chosen by the ``telemetry_store``
setting: ``sqlite`` (embedded mode, ``<data_dir>/telemetry.db``) and ``influxdb``
(production). Both pass the same contract tests (``tests/telemetry/test_stores.py``).

Data model: a :class:`Sample` is what one device node measured at one instant (device
timestamp ``ts_ms``). A store keeps one copy per ``(device_id, node, ts_ms)``: writing the same
key again overwrites the values it carries (last wins) and keeps the other values of that
instant, which is what InfluxDB does with a point written twice.

A parameter keeps one value type (float, int, bool or str) for good: a write that changes it is
refused, as InfluxDB refuses it. Parameter names and ids must survive InfluxDB's line protocol
in every version, so :func:`check_sample` refuses the few that cannot (see its docstring).

Exceptions::

    TelemetryError                    base of this package
    ├── StoreUnavailableError         store down, unreachable, overloaded, not authorised:
    │                                 keep the batch and retry later
    └── StoreRejectedError            the store refused the data itself: retrying won't help
        └── InvalidSampleError        refused before any I/O: no backend can store this sample
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cloud.settings import Settings

Value = float | int | bool | str

#: Field names the stores use themselves (``seq``, the ``device``/``node`` tags) or that
#: InfluxDB reserves (``time`` in 1.x and 3.x; names starting with ``_`` in 2.x).
RESERVED_NAMES = frozenset({"time", "seq", "device", "node"})

#: Aggregates ``history`` computes over an interval.
AGGREGATES = ("mean", "min", "max")

# Both stores keep values as 64-bit integers (InfluxDB ``i`` fields, SQLite INTEGER) and keep
# timestamps as int64 nanoseconds (InfluxDB), which bounds ts_ms to year 2262.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
TS_MS_MAX = INT64_MAX // 1_000_000
_INF = float("inf")


class TelemetryError(Exception):
    """Base of the telemetry store errors."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status the store answered with, when there was one.
        self.status = status


class StoreUnavailableError(TelemetryError):
    """The store is down, unreachable, overloaded or refuses our credentials: retry later."""


class StoreRejectedError(TelemetryError):
    """The store refused the data itself (bad format, type conflict): retrying won't help."""


class InvalidSampleError(StoreRejectedError):
    """A sample no backend can store; raised before any I/O, so nothing was written."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """What one device node measured at one instant."""

    device_id: str
    node: str  # "master" or a slave node id such as "meter"
    ts_ms: int  # device timestamp, ms since epoch (UTC)
    seq: int  # device sequence number
    values: Mapping[str, Value]


@dataclasses.dataclass(frozen=True)
class Point:
    """One row of ``history``: a sample's values, or one interval's aggregates.

    ``values`` holds only the fields that have a value at that point or in that interval; a
    field missing from it had none.
    """

    ts_ms: int
    values: dict[str, Value | None]


MASTER = "master"


@runtime_checkable
class TelemetryStore(Protocol):
    """What the ingest workers, the API and the tests need from a telemetry store."""

    def write(self, samples: Sequence[Sample]) -> None:
        """Store ``samples``; idempotent: a rewritten ``(device_id, node, ts_ms)`` keeps one copy.

        On :class:`StoreUnavailableError` the caller keeps the batch and writes it again later
        (writing it twice is harmless). A batch with an invalid sample raises
        :class:`InvalidSampleError` before anything is written; the ingest worker should call
        :func:`check_sample` per message so that one bad sample never costs a batch.
        """
        ...

    def latest(self, device_id: str, node: str | None = None) -> dict[str, tuple[int, Value]]:
        """Parameter -> ``(ts_ms, value)`` of its newest value (``node`` None: the master)."""
        ...

    def history(
        self,
        device_id: str,
        start_ms: int,
        end_ms: int,
        fields: Sequence[str] | None = None,
        node: str | None = None,
        interval_s: int | None = None,
        aggregate: str | None = None,
        limit: int = 10000,
    ) -> list[Point]:
        """Points in ``[start_ms, end_ms)``, ascending.

        Raw: one Point per sample that has at least one of ``fields`` (None: all fields).
        With ``interval_s`` and ``aggregate`` (one of :data:`AGGREGATES`): one Point per
        interval that has data, ``ts_ms`` = interval start (intervals are aligned to the
        epoch), over numeric (int and float, not bool) fields only; ``mean`` is always a
        float, ``min``/``max`` keep the field's type. At most ``limit`` Points.
        """
        ...

    def count(self, device_id: str | None = None) -> int:
        """Number of stored samples (distinct device/node/ts_ms), for tests and benchmarks."""
        ...

    def ping(self) -> bool:
        """Whether the store answers now; never raises."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


@functools.lru_cache(maxsize=1 << 16)
def _name_problem(name: str, what: str) -> str | None:
    """Why the string ``name`` cannot be an id or a parameter name, or None if it can.

    Cached: a fleet repeats the same few thousand names, and ingest checks every sample.
    """
    if not name:
        return f"{what} is empty"
    if not name.isprintable() and any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # Line protocol has no escape for a newline in a tag or a key.
        return f"{what} {name!r} contains a control character"
    if "\\" in name:
        # InfluxDB 1.x/2.x keep a backslash in a tag or key literally but cannot carry one at
        # the end or before an escaped character, and 3.x reads "\\" as one backslash: only a
        # backslash before any other character means the same to every version.
        for i, char in enumerate(name):
            if char == "\\" and (i + 1 == len(name) or name[i + 1] in "\\, ="):
                return (
                    f"{what} {name!r}: a backslash must not end it or precede a backslash, "
                    "comma, space or equals sign"
                )
    if what == _PARAMETER and (name in RESERVED_NAMES or name[0] == "_"):
        return f"{what} {name!r} is reserved"
    return None


_PARAMETER = "parameter name"


def name_problem(name: object, what: str = "name") -> str | None:
    """Why ``name`` is refused as a device id or node id; None when it is fine."""
    if type(name) is not str:
        return f"{what} must be a string, not {type(name).__name__}"
    return _name_problem(name, what)


def field_problem(name: object) -> str | None:
    """Why ``name`` is refused as a parameter name (also: reserved names), or None."""
    if type(name) is not str:
        return f"{_PARAMETER} must be a string, not {type(name).__name__}"
    return _name_problem(name, _PARAMETER)


def value_problem(value: object) -> str | None:
    """Why ``value`` cannot be stored, or None when it can."""
    # Exact types: bool is an int subclass, and subclasses such as numpy scalars would reach
    # InfluxDB as their repr.
    if type(value) is float:
        if not -_INF < value < _INF:  # false for NaN too
            return f"value {value!r} is not finite (InfluxDB refuses NaN and infinity)"
        return None
    if type(value) is int:
        if not INT64_MIN <= value <= INT64_MAX:
            return f"integer {value} does not fit in 64 bits"
        return None
    if type(value) is bool or type(value) is str:
        return None
    return f"value of type {type(value).__name__} is not float, int, bool or str"


def check_sample(sample: Sample) -> None:
    """Raise :class:`InvalidSampleError` if no backend can store ``sample``.

    Refused: empty or non-string ids and names, control characters in them, a backslash at the
    end of one or before a backslash, comma, space or ``=`` (line protocol cannot carry these
    the same way in InfluxDB 1.x, 2.x and 3.x), reserved parameter names (:data:`RESERVED_NAMES`
    and names starting with ``_``), a sample without values, values that are not finite floats,
    64-bit ints, bools or strings, timestamps before 1970 or after 2262.
    """
    problem = _sample_problem(sample)
    if problem is not None:
        raise InvalidSampleError(f"sample {sample.device_id!r}/{sample.node!r}: {problem}")


def _sample_problem(sample: Sample) -> str | None:
    problem = name_problem(sample.device_id, "device id") or name_problem(sample.node, "node id")
    if problem:
        return problem
    if type(sample.ts_ms) is not int or not 0 <= sample.ts_ms <= TS_MS_MAX:
        return f"timestamp {sample.ts_ms!r} is not an int between 1970 and 2262"
    if type(sample.seq) is not int or not INT64_MIN <= sample.seq <= INT64_MAX:
        return f"sequence number {sample.seq!r} is not a 64-bit int"
    if not sample.values:
        return "no values"
    for name, value in sample.values.items():
        problem = field_problem(name)
        if problem:
            return problem
        # Inline fast path of value_problem() for the valid values.
        if type(value) is float:
            if -_INF < value < _INF:
                continue
        elif type(value) is int:
            if INT64_MIN <= value <= INT64_MAX:
                continue
        elif type(value) is str or type(value) is bool:
            continue
        return f"{name!r}: {value_problem(value)}"
    return None


def check_history_args(
    start_ms: int, end_ms: int, interval_s: int | None, aggregate: str | None, limit: int
) -> None:
    """Raise ValueError for history arguments no backend accepts (caller bugs, not data)."""
    if (interval_s is None) != (aggregate is None):
        raise ValueError("interval_s and aggregate go together")
    if aggregate is not None and aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, not {aggregate!r}")
    if interval_s is not None and interval_s < 1:
        raise ValueError("interval_s must be at least 1")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if start_ms > end_ms:
        raise ValueError("start_ms is after end_ms")


def open_store(settings: Settings) -> TelemetryStore:
    """The telemetry store the settings choose (``telemetry_store``)."""
    kind = settings.telemetry_store
    if kind == "sqlite":
        from cloud.telemetry.sqlite import SQLiteStore

        return SQLiteStore(settings.data_path / "telemetry.db")
    if kind == "influxdb":
        # Imported here: the InfluxDB client is heavy and embedded mode never needs it.
        from cloud.telemetry.influx import InfluxStore

        return InfluxStore.from_settings(settings)
    raise ValueError(f"unknown telemetry_store {kind!r}")
