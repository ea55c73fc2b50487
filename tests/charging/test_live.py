"""The live view as server-sent events, read over a real HTTP connection from a real threaded
server (werkzeug's), on SQLite and MariaDB: the running session appears, its power and energy
follow the telemetry store, it disappears when the charger stops it, a guest sees only their
own, and the stream ends on the server when the client goes."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from werkzeug.serving import make_server

from cloud.charging import live
from cloud.identity.grants import AccessLevel
from cloud.telemetry.store import Sample
from tests.charging.test_api_sessions import grant, running
from tests.charging.test_sessions import Records, charger_id, event, now_ms, started, stopped
from tests.charging.test_worker import wait_for
from tests.helpers import API, Tenant

TIMEOUT = 20.0


@pytest.fixture
def server(app: Flask) -> Iterator[tuple[str, int]]:
    """The app behind a real threaded HTTP server on a free port."""
    http_server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http_server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield "127.0.0.1", http_server.server_port
    http_server.shutdown()
    thread.join(TIMEOUT)


@pytest.fixture
def records(app: Flask, tenant: Tenant) -> Records:
    return Records(app, tenant)


class EventStream:
    """A client of one ``text/event-stream`` response (WHATWG HTML 9.2), on its own socket."""

    def __init__(self, address: tuple[str, int], path: str, token: str) -> None:
        self.connection = http.client.HTTPConnection(*address, timeout=TIMEOUT)
        self.connection.request(
            "GET",
            API + path,
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        )
        self.response = self.connection.getresponse()
        self.comments = 0
        self.retry: int | None = None

    def next(self) -> dict[str, Any]:
        """The data of the next ``session`` event (waits up to 20 s for it)."""
        name, data = None, []
        while True:
            line = self.response.readline().decode()
            if not line:
                raise AssertionError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("retry:"):
                self.retry = int(line.split(":", 1)[1])
            elif line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "" and data:
                assert name == "session"
                found: dict[str, Any] = json.loads("\n".join(data))
                return found

    def until(self, condition: Any, what: str) -> dict[str, Any]:
        """Events until one satisfies ``condition``."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            found = self.next()
            if condition(found):
                return found
        raise AssertionError(f"no event with {what}")

    def close(self) -> None:
        self.connection.close()


def open_views() -> float:
    """The API's gauge of open live views."""
    return REGISTRY.get_sample_value("ampfleet_live_views_open") or 0.0


def sample(device_id: str, node: str, values: dict[str, float]) -> Sample:
    return Sample(device_id, node, now_ms(), 1, values)


def test_the_live_view_follows_the_running_session(
    app: Flask, records: Records, server: tuple[str, int]
) -> None:
    device = records.device()
    _, owner = records.tenant.user("owner")
    stream = EventStream(server, f"/devices/{device.id}/sessions/live", owner.token or "")
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        assert stream.response.getheader("Cache-Control") == "no-cache"
        first = stream.next()
        assert stream.retry == live.RETRY_MS
        assert first == {
            "device_id": device.id,
            "session": None,
            "power_w": None,
            "energy_wh": None,
            "measured_at": None,
        }

        sid = charger_id()
        records.apply(device, event("charging.started", started(sid, meter=10_000.0)))
        shown = stream.until(lambda e: e["session"] is not None, "the session")
        assert (
            shown["session"]["charger_session_id"] == sid and shown["session"]["state"] == "active"
        )
        assert shown["session"]["_links"]["stop"]["href"].endswith("/stop")
        assert (shown["power_w"], shown["energy_wh"]) == (None, 0.0)

        store = app.extensions["ampfleet.telemetry"]
        store.write([sample(device.id, "meter", {"power_w": 7200.0, "energy_wh": 11_500.0})])
        metered = stream.until(lambda e: e["power_w"] is not None, "power")
        assert (metered["power_w"], metered["energy_wh"]) == (7200.0, 1500.0)
        assert metered["measured_at"] is not None

        records.apply(device, event("charging.stopped", stopped(sid, 1600.0, 60)))
        ended = stream.until(lambda e: e["session"] is None, "the end of the session")
        assert ended["power_w"] is None
    finally:
        stream.close()


def test_the_stream_ends_on_the_server_when_the_client_goes(
    records: Records, server: tuple[str, int]
) -> None:
    device = records.device()
    _, owner = records.tenant.user("owner")
    before = open_views()
    stream = EventStream(server, f"/devices/{device.id}/sessions/live", owner.token or "")
    stream.next()
    wait_for(lambda: open_views() == before + 1, "the stream to be open")
    stream.close()
    wait_for(lambda: open_views() == before, "the server to end the stream")


def test_a_guest_sees_only_their_own_running_session(
    records: Records, server: tuple[str, int]
) -> None:
    device = records.device()
    guest, guest_client = records.tenant.user()
    now = dt.datetime.now(dt.UTC)
    grant(
        records,
        device.id,
        guest["id"],
        AccessLevel.GUEST,
        valid_from=now - dt.timedelta(hours=1),
        valid_until=now + dt.timedelta(hours=1),
    )
    someone, _ = records.tenant.user("owner")
    theirs = running(records, device.id, someone["id"])
    stream = EventStream(server, f"/devices/{device.id}/sessions/live", guest_client.token or "")
    try:
        assert stream.next()["session"] is None
        mine = running(records, device.id, guest["id"])
        seen = stream.until(lambda e: e["session"] is not None, "the guest's session")
        assert seen["session"]["id"] == mine.id != theirs.id
    finally:
        stream.close()


def test_the_live_view_is_scoped_and_documented(records: Records, other_tenant: Tenant) -> None:
    theirs = other_tenant.device(state="active")
    device = records.device()
    _, owner = records.tenant.user("owner")
    _, installer = records.tenant.user("installer")
    assert owner.get(f"/devices/{theirs['id']}/sessions/live").status_code == 404
    assert installer.get(f"/devices/{device.id}/sessions/live").status_code == 403
    spec = owner.get("/openapi.json").get_json()
    live_get = spec["paths"][f"{API}/devices/{{device_id}}/sessions/live"]["get"]
    assert "text/event-stream" in live_get["responses"]["200"]["content"]
    assert live_get["x-required-permission"] == "sessions:read"
    assert live_get["x-alternative-permissions"] == ["charging:start"]
