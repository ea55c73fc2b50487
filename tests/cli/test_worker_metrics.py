"""A worker's /metrics: bound to the API's host by default, optionally behind a bearer token
(issue 13). Real HTTP requests against the server the worker starts."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from cloud.cli import workers
from cloud.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _run_worker(settings: Settings, check: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Run a dummy service through the workers' _serve: ``check`` runs once it has started,
    then a SIGTERM ends it, as it ends a real worker. Returns the metrics servers started."""
    servers: list[Any] = []
    real = workers.start_metrics_server

    def recording(*args: Any, **kwargs: Any) -> Any:
        server = real(*args, **kwargs)
        servers.append(server)
        return server

    monkeypatch.setattr(workers, "start_metrics_server", recording)
    stopped: list[bool] = []

    class Service:
        def start(self) -> None:
            try:
                check()
            finally:
                signal.raise_signal(signal.SIGTERM)

        def stop(self) -> None:
            stopped.append(True)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        workers._serve(settings, "ingest", "sqlite", Service(), None)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert stopped == [True]
    return servers


def test_metrics_host_defaults_to_the_api_host() -> None:
    assert Settings.load(environ={}).metrics_host == "127.0.0.1"
    assert Settings.load(environ={"AMPFLEET_API_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"  # noqa: S104
    both = {"AMPFLEET_API_HOST": "0.0.0.0", "AMPFLEET_METRICS_HOST": "127.0.0.2"}  # noqa: S104
    assert Settings.load(environ=both).metrics_host == "127.0.0.2"


def test_worker_metrics_listen_on_loopback_without_token_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _free_port()
    settings = Settings.load(environ={"AMPFLEET_METRICS_PORT": str(port)})
    seen: list[tuple[int, bytes]] = []
    servers = _run_worker(
        settings, lambda: seen.append(_get(f"http://127.0.0.1:{port}/metrics")), monkeypatch
    )
    assert seen[0][0] == 200
    assert b"python_info" in seen[0][1]
    assert [s.server_address[0] for s in servers] == ["127.0.0.1"]


def test_worker_metrics_with_a_token_refuse_scrapes_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _free_port()
    settings = Settings.load(
        environ={"AMPFLEET_METRICS_PORT": str(port), "AMPFLEET_METRICS_TOKEN": "scrape-me"}
    )
    url = f"http://127.0.0.1:{port}/metrics"
    seen: dict[str, tuple[int, bytes]] = {}

    def check() -> None:
        seen["none"] = _get(url)
        seen["wrong"] = _get(url, "not-it")
        seen["right"] = _get(url, "scrape-me")

    _run_worker(settings, check, monkeypatch)
    assert seen["none"][0] == 401
    assert seen["wrong"][0] == 401
    assert b"python_info" not in seen["none"][1] + seen["wrong"][1]
    assert seen["right"][0] == 200
    assert b"python_info" in seen["right"][1]
