"""InfluxDB line protocol for samples, and InfluxQL quoting: I/O-free and fast.

One line per sample::

    telemetry,device=<device_id>,node=<node> <param>=<value>,...,seq=<seq>i <ts_ms>

Escaping follows the line-protocol reference: commas, spaces and equals signs in tag keys, tag
values and field keys are escaped with a backslash; commas and spaces in the measurement;
double quotes and backslashes in string field values. Integers carry the ``i`` suffix, floats
are written with ``repr`` (shortest round-trip form), bools as ``true``/``false``.

Why it is hand-written: an ingest worker writes 30,000 ten-value samples a second, so each
sample must serialize in a few microseconds; influxdb-client's ``Point`` takes ten times that.
The escaped ``measurement,tags`` prefix of each series and the escaped ``key=`` of each field
are computed (and validated) once and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cloud.telemetry.store import (
    INT64_MAX,
    INT64_MIN,
    TS_MS_MAX,
    InvalidSampleError,
    Sample,
    check_sample,
    field_problem,
    name_problem,
)

MEASUREMENT = "telemetry"

_INF = float("inf")
# Past this many cached series or keys the cache starts over, so that a worker that sees
# millions of devices over months does not grow without bound.
_CACHE_LIMIT = 200_000


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (comma, equals sign, space)."""
    if "," in text or "=" in text or " " in text:
        return text.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")
    return text


def escape_measurement(text: str) -> str:
    """Escape a measurement name (comma, space)."""
    return text.replace(",", r"\,").replace(" ", r"\ ")


def escape_string_value(text: str) -> str:
    """Escape a string field value's content (backslash, double quote)."""
    if "\\" in text or '"' in text:
        return text.replace("\\", "\\\\").replace('"', '\\"')
    return text


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier: never read as a keyword or an operator."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL single-quoted string literal (backslash and quote escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


class LineEncoder:
    """Turns samples into line-protocol lines, validating as it goes."""

    def __init__(self, measurement: str = MEASUREMENT) -> None:
        self._measurement = escape_measurement(measurement)
        self._series: dict[tuple[str, str], str] = {}
        self._keys: dict[str, str] = {}

    def _series_prefix(self, sample: Sample) -> str:
        problem = name_problem(sample.device_id, "device id") or name_problem(
            sample.node, "node id"
        )
        if problem:
            raise InvalidSampleError(problem)
        if len(self._series) >= _CACHE_LIMIT:
            self._series.clear()
        # Tags sorted by key (device < node), as InfluxDB prefers them.
        prefix = (
            f"{self._measurement},device={escape_key(sample.device_id)},"
            f"node={escape_key(sample.node)} "
        )
        self._series[(sample.device_id, sample.node)] = prefix
        return prefix

    def _key(self, name: str) -> str:
        problem = field_problem(name)
        if problem:
            raise InvalidSampleError(problem)
        if len(self._keys) >= _CACHE_LIMIT:
            self._keys.clear()
        escaped = escape_key(name) + "="
        self._keys[name] = escaped
        return escaped

    def encode(self, samples: Iterable[Sample]) -> list[str]:
        """One line per sample (no trailing newline); InvalidSampleError on a bad sample."""
        series = self._series
        keys = self._keys
        lines: list[str] = []
        append_line = lines.append
        for sample in samples:
            prefix = series.get((sample.device_id, sample.node)) or self._series_prefix(sample)
            parts: list[str] = []
            append = parts.append
            # Exact type checks, deliberately: bool is an int subclass and must not get "i";
            # numpy scalars and other subclasses must not reach the wire as their repr.
            for name, value in sample.values.items():
                key = keys.get(name) or self._key(name)
                if type(value) is float:
                    if not -_INF < value < _INF:  # false for NaN too
                        break
                    append(key + repr(value))
                elif type(value) is int:
                    if not INT64_MIN <= value <= INT64_MAX:
                        break
                    append(f"{key}{value}i")
                elif type(value) is str:
                    append(key + '"' + escape_string_value(value) + '"')
                elif type(value) is bool:
                    append(key + ("true" if value else "false"))
                else:
                    break
            else:
                ts = sample.ts_ms
                seq = sample.seq
                if (
                    parts
                    and type(ts) is int
                    and 0 <= ts <= TS_MS_MAX
                    and type(seq) is int
                    and INT64_MIN <= seq <= INT64_MAX
                ):
                    append_line(f"{prefix}{','.join(parts)},seq={seq}i {ts}")
                    continue
            # Only invalid samples get here: let the shared check say exactly why.
            check_sample(sample)
            raise InvalidSampleError(f"sample {sample!r} cannot be encoded")  # pragma: no cover
        return lines


def chunks(lines: Sequence[str], size: int, max_chars: int = 6_000_000) -> Iterable[bytes]:
    """``lines`` as newline-joined UTF-8 bodies of at most ``size`` lines each.

    A body also stops growing past ``max_chars`` characters (24 MB even if every one took four
    bytes): InfluxDB 1.x refuses bodies over 25 MB (``max-body-size``), which 5,000 samples of
    the largest MQTT payload the platform accepts would exceed.
    """
    start = 0
    while start < len(lines):
        end = min(start + size, len(lines))
        total = 0
        for index in range(start, end):
            total += len(lines[index]) + 1
            if total > max_chars and index > start:
                end = index
                break
        yield "\n".join(lines[start:end]).encode()
        start = end
