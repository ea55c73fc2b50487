"""The InfluxDB telemetry store: line protocol in, InfluxQL out.

Schema: measurement ``telemetry``, tags ``device`` and ``node``, one field per parameter plus
the integer field ``seq``, millisecond timestamps. Rewriting a point (same series, same time)
overwrites it, which gives the store its idempotent writes.

Writes go one of two ways (setting ``influxdb_api``):

* ``v2``: influxdb-client's synchronous WriteApi to ``/api/v2/write`` (InfluxDB 1.8+, 2.x,
  3.x). The bucket must exist; nothing here creates it.
* ``v1``: a gzip POST to ``/write?db=...&precision=ms`` (InfluxDB 1.6/1.7, which have no
  ``/api/v2``). The database is created on the first write that finds it missing.

Reads are InfluxQL on ``/query`` whichever way writes go: InfluxDB 1.x speaks it natively, 2.x
through its v1-compatible endpoint (the bucket needs a DBRP mapping, which recent 2.x versions
create virtually for every bucket), 3.x natively. Identifiers are always double-quoted and
string literals escaped, so device ids and parameter names from users cannot change a query.

Errors: connection failures, timeouts, 5xx, 429 and also 401/403/404 (wrong token, missing
bucket: configuration that an operator fixes, while the data stays good) raise
:class:`StoreUnavailableError`; other 4xx (unparsable line, field type conflict) raise
:class:`StoreRejectedError` with the server's message. InfluxDB applies the valid lines of a
batch that it partly refuses ("partial write"): the error still reaches the caller.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import urllib3

from cloud.telemetry.lineprotocol import (
    MEASUREMENT,
    LineEncoder,
    chunks,
    quote_ident,
    quote_literal,
)
from cloud.telemetry.store import (
    MASTER,
    Point,
    Sample,
    StoreRejectedError,
    StoreUnavailableError,
    TelemetryError,
    Value,
    check_history_args,
    field_problem,
)

if TYPE_CHECKING:
    from cloud.settings import Settings

log = logging.getLogger(__name__)

#: Lines per HTTP write: InfluxDB's guidance for batch size, and what keeps one request well
#: under 1.x's default 25 MB body limit.
CHUNK_LINES = 5000

# gzip level for v1 writes: level 1 compresses line protocol about 7x in a quarter of the CPU
# time of the default level 9 (which shrinks it only 15% more).
_GZIP_LEVEL = 1

# HTTP statuses that mean "not now" rather than "not this data".
_UNAVAILABLE_STATUSES = frozenset({401, 403, 404, 408, 429})

_NUMERIC_TYPES = frozenset({"float", "integer", "unsigned"})
_QUOTED_MEASUREMENT = quote_ident(MEASUREMENT)
# Columns of ``SELECT *`` that are not parameters.
_NOT_PARAMETERS = frozenset({"time", "device", "node", "seq"})
_MESSAGE_LIMIT = 500
_SHOW_FIELD_KEYS = f"SHOW FIELD KEYS FROM {_QUOTED_MEASUREMENT}"


def _error_message(body: bytes | str | None) -> str:
    """The server's error text from a response body (JSON ``error``/``message`` or raw)."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        text = str(data.get("error") or data.get("message") or text)
    return text.strip()[:_MESSAGE_LIMIT]


def _http_error(status: int, message: str, what: str) -> TelemetryError:
    """The store error for an HTTP status the server answered ``what`` with."""
    text = f"InfluxDB {what}: HTTP {status}: {message}"
    if status >= 500 or status in _UNAVAILABLE_STATUSES or status == 0:
        return StoreUnavailableError(text, status=status)
    return StoreRejectedError(text, status=status)


class InfluxStore:
    """Telemetry in InfluxDB (1.6+, 2.x, 3.x); see the module docstring."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        api: str = "v2",
        org: str = "",
        token: str = "",
        timeout_s: float = 10.0,
        chunk_lines: int = CHUNK_LINES,
    ) -> None:
        if api not in ("v1", "v2"):
            raise ValueError(f"api must be v1 or v2, not {api!r}")
        self.url = url.rstrip("/")
        self.database = database
        self.api = api
        self.org = org
        self._token = token
        self._timeout_s = timeout_s
        self._chunk_lines = chunk_lines
        self._encoder = LineEncoder()
        # Retries are the caller's business (it keeps the batch): a hidden retry here would
        # only stretch the time until it learns that the store is down.
        self._http = urllib3.PoolManager(
            num_pools=2,
            maxsize=8,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        )
        self._headers = self._auth_headers()
        self._client: Any = None  # influxdb_client.InfluxDBClient, created by the first v2 write
        self._write_api: Any = None
        # Whether the server answers several ';'-separated statements in one request (1.x and
        # 2.x do; 3.x may not): None until the first try.
        self._multi_statement: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> InfluxStore:
        """The store the ``influxdb_*`` settings describe."""
        return cls(
            settings.influxdb_url,
            settings.influxdb_bucket,
            api=settings.influxdb_api,
            org=settings.influxdb_org,
            token=settings.influxdb_token,
            timeout_s=float(settings.influxdb_timeout),
        )

    def _auth_headers(self) -> dict[str, str]:
        token = self._token
        if not token:
            return {}
        if self.api == "v1" and ":" in token:
            # InfluxDB 1.6/1.7 know only Basic authentication; "Token user:password" came in 1.8.
            return {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
        return {"Authorization": "Token " + token}

    # -- writes ---------------------------------------------------------------------------

    def write(self, samples: Sequence[Sample]) -> None:
        """Write ``samples`` in chunks of at most ``chunk_lines`` lines (see TelemetryStore)."""
        lines = self._encoder.encode(samples)  # InvalidSampleError before any I/O
        for body in chunks(lines, self._chunk_lines):
            if self.api == "v1":
                self._write_v1(body)
            else:
                self._write_v2(body)

    def _write_v1(self, body: bytes) -> None:
        compressed = gzip.compress(body, compresslevel=_GZIP_LEVEL)
        headers = {
            **self._headers,
            "Content-Encoding": "gzip",
            "Content-Type": "text/plain; charset=utf-8",
        }
        url = f"{self.url}/write?" + urllib.parse.urlencode(
            {"db": self.database, "precision": "ms"}
        )
        for attempt in (1, 2):
            status, message = self._request("POST", url, compressed, headers, "write")
            if status < 300:
                return
            if status == 404 and "database not found" in message and attempt == 1:
                self._create_database()
                continue
            raise _http_error(status, message, "write")

    def _create_database(self) -> None:
        # CREATE DATABASE is idempotent in InfluxDB 1.x; it needs POST since 1.1.
        log.info("creating InfluxDB database %r", self.database)
        self._post_query(f"CREATE DATABASE {quote_ident(self.database)}", database=None)

    def _write_v2(self, body: bytes) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision

        write_api = self._write_api or self._open_v2()
        try:
            write_api.write(
                bucket=self.database, org=self.org, record=body, write_precision=WritePrecision.MS
            )
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            if status is None and exc.response is not None:
                status = exc.response.status
            message = _error_message(getattr(exc, "body", None)) or str(exc.message)
            raise _http_error(int(status or 0), message[:_MESSAGE_LIMIT], "write") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"InfluxDB write: {exc}") from exc

    def _open_v2(self) -> Any:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self._client = InfluxDBClient(
            url=self.url,
            token=self._token,
            org=self.org,
            enable_gzip=True,
            timeout=int(self._timeout_s * 1000),
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._write_api

    # -- HTTP -----------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        what: str,
    ) -> tuple[int, str]:
        """(status, error message) of one request; StoreUnavailableError when no answer."""
        try:
            response = self._http.request(method, url, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"InfluxDB {what}: {exc}") from exc
        if response.status < 300:
            return response.status, ""
        return response.status, _error_message(response.data)

    def _post_query(self, query: str, database: str | None = "") -> list[dict[str, Any]]:
        """The ``results`` of one /query request (POST: long queries, and 1.x DDL needs it)."""
        fields = {"q": query, "epoch": "ms"}
        if database is not None:
            fields["db"] = database or self.database
        headers = {**self._headers, "Content-Type": "application/x-www-form-urlencoded"}
        body = urllib.parse.urlencode(fields).encode()
        try:
            response = self._http.request("POST", f"{self.url}/query", body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailableError(f"InfluxDB query: {exc}") from exc
        if response.status >= 300:
            raise _http_error(response.status, _error_message(response.data), "query")
        try:
            results = json.loads(response.data)["results"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TelemetryError(
                f"InfluxDB query: unexpected answer {response.data[:200]!r}"
            ) from exc
        return list(results)

    def _query(self, statements: Sequence[str]) -> list[dict[str, Any]]:
        """One result per statement, in one request when the server takes several."""
        if len(statements) > 1 and self._multi_statement is not False:
            try:
                results = self._post_query(";\n".join(statements))
            except StoreRejectedError:
                if self._multi_statement:
                    raise
                results = []
            if len(results) == len(statements):
                self._multi_statement = True
                return [self._check_statement(r) for r in results]
            log.info("InfluxDB does not run several statements per query: one by one from now")
            self._multi_statement = False
        return [self._check_statement(self._post_query(s)[0]) for s in statements]

    @staticmethod
    def _check_statement(result: dict[str, Any]) -> dict[str, Any]:
        error = result.get("error")
        if error is None:
            return result
        if str(error).startswith("database not found"):
            return {}  # nothing written yet: an empty store
        raise TelemetryError(f"InfluxDB query: {str(error)[:_MESSAGE_LIMIT]}")

    # -- reads ----------------------------------------------------------------------------

    def _field_types(self) -> dict[str, str]:
        """Parameter -> InfluxDB field type (float, integer, string, boolean, unsigned)."""
        (result,) = self._query([_SHOW_FIELD_KEYS])
        return _field_types(result)

    @staticmethod
    def _coerce(kind: str | None, value: Any) -> Value:
        # InfluxDB's JSON writes a float with an integral value as "2", which reads as int.
        if kind == "float" and type(value) is int:
            return float(value)
        return value

    def _where(self, device_id: str, node: str | None) -> str:
        return f'"device" = {quote_literal(device_id)} AND "node" = {quote_literal(node or MASTER)}'

    def latest(self, device_id: str, node: str | None = None) -> dict[str, tuple[int, Value]]:
        """Newest ``(ts_ms, value)`` of each parameter: one LAST() statement per field."""
        types = self._field_types()
        names = sorted(types)
        if not names:
            return {}
        where = self._where(device_id, node)
        # One statement per field: LAST(*) returns values but not each one's own timestamp.
        statements = [_select(f"LAST({quote_ident(name)})", where) for name in names]
        latest: dict[str, tuple[int, Value]] = {}
        for name, result in zip(names, self._query(statements), strict=True):
            for series in result.get("series", ()):
                for ts, value, *_ in series["values"]:
                    if value is not None:
                        latest[name] = (int(ts), self._coerce(types[name], value))
        return latest

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
        """Raw points or per-interval aggregates in ``[start_ms, end_ms)`` (see TelemetryStore)."""
        check_history_args(start_ms, end_ms, interval_s, aggregate, limit)
        wanted = None if fields is None else _storable(fields)
        if wanted is not None and not wanted:
            return []
        where = (
            f"{self._where(device_id, node)} AND time >= {int(start_ms)}ms "
            f"AND time < {int(end_ms)}ms"
        )
        if interval_s is None or aggregate is None:
            return self._raw(where, wanted, limit)
        return self._aggregated(where, wanted, int(interval_s), aggregate, limit)

    def _raw(self, where: str, wanted: list[str] | None, limit: int) -> list[Point]:
        columns = "*" if wanted is None else ", ".join(map(quote_ident, wanted))
        select = _select(columns, where, f"ORDER BY time ASC LIMIT {int(limit)}")
        # The field types come in the same request: they turn JSON's "2" back into 2.0.
        types_result, result = self._query([_SHOW_FIELD_KEYS, select])
        types = _field_types(types_result)
        points: list[Point] = []
        for series in result.get("series", ()):
            names = series["columns"][1:]
            for ts, *row in series["values"]:
                values: dict[str, Value | None] = {
                    name: self._coerce(types.get(name), value)
                    for name, value in zip(names, row, strict=True)
                    if value is not None and name not in _NOT_PARAMETERS
                }
                if values:
                    points.append(Point(int(ts), values))
        return points

    def _aggregated(
        self, where: str, wanted: list[str] | None, interval_s: int, aggregate: str, limit: int
    ) -> list[Point]:
        types = self._field_types()
        numeric = [
            name
            for name in (sorted(types) if wanted is None else wanted)
            if types.get(name) in _NUMERIC_TYPES
        ]
        if not numeric:
            return []
        function = aggregate.upper()  # one of AGGREGATES, checked above
        columns = ", ".join(f"{function}({quote_ident(name)})" for name in numeric)
        # fill(none): intervals without data are left out, as the SQLite store does. GROUP BY
        # time() buckets are aligned to the epoch.
        tail = f"GROUP BY time({int(interval_s)}s) fill(none) LIMIT {int(limit)}"
        (result,) = self._query([_select(columns, where, tail)])
        points: list[Point] = []
        for series in result.get("series", ()):
            for ts, *row in series["values"]:
                values: dict[str, Value | None] = {}
                # Output columns are mean, mean_1, ...: match them by position.
                for name, value in zip(numeric, row, strict=True):
                    if value is None:
                        continue
                    if aggregate == "mean":
                        values[name] = float(value)
                    else:
                        values[name] = self._coerce(types[name], value)
                if values:
                    points.append(Point(int(ts), values))
        return points

    def count(self, device_id: str | None = None) -> int:
        """Stored samples: every point carries ``seq``, so COUNT("seq") counts points."""
        where = "" if device_id is None else f'"device" = {quote_literal(device_id)}'
        (result,) = self._query([_select('COUNT("seq")', where)])
        return sum(int(s["values"][0][1]) for s in result.get("series", ()))

    def ping(self) -> bool:
        """Whether ``/ping`` answers with a success status now."""
        try:
            response = self._http.request(
                "GET", f"{self.url}/ping", headers=self._headers, timeout=min(self._timeout_s, 5.0)
            )
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        return 200 <= response.status < 300

    def close(self) -> None:
        """Close the HTTP pools (and influxdb-client's)."""
        if self._write_api is not None:
            self._write_api.close()
            self._write_api = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._http.clear()

    def drop_database(self) -> None:
        """Delete the whole v1 database (tests; never called by the platform)."""
        self._post_query(f"DROP DATABASE {quote_ident(self.database)}", database=None)


def _select(columns: str, where: str, tail: str = "") -> str:
    """An InfluxQL SELECT on the telemetry measurement.

    Callers build ``columns`` and ``where`` only from quote_ident()/quote_literal() output,
    integers and fixed keywords: no text from a request reaches the query unquoted.
    """
    statement = f"SELECT {columns} FROM {_QUOTED_MEASUREMENT}"  # noqa: S608 - see docstring
    if where:
        statement += f" WHERE {where}"
    return f"{statement} {tail}" if tail else statement


def _storable(fields: Iterable[str]) -> list[str]:
    """Requested field names that could exist, without duplicates, in the caller's order."""
    return [
        name
        for name in dict.fromkeys(fields)
        if isinstance(name, str) and field_problem(name) is None
    ]


def _field_types(result: dict[str, Any]) -> dict[str, str]:
    """Parameter -> field type from a SHOW FIELD KEYS result (``seq`` left out)."""
    types: dict[str, str] = {}
    for series in result.get("series", ()):
        for name, kind in series["values"]:
            if name == "seq":
                continue
            # A field whose type changed between shards is listed once per type: take the
            # least capable type so that aggregation never meets a non-numeric shard.
            if name in types and types[name] != kind:
                kind = "float" if {types[name], kind} <= _NUMERIC_TYPES else "string"
            types[name] = kind
    return types
