"""The live view of a charger: its running session with the latest power and energy, as
server-sent events (``text/event-stream``, WHATWG HTML 9.2).

The stream polls the records and the telemetry store once a ``poll`` and sends an event
``session`` whenever what it would show changed (at once on connecting, so a client draws
immediately), a comment line as a keep-alive otherwise every ``keepalive`` seconds (proxies
close silent connections, and a failed write is how a server learns that the client left: the
keep-alive is short so that a departed viewer gives its API thread back within seconds), and
ends after ``max_seconds``: EventSource clients reconnect on their own (``retry``). Each poll uses a
fresh, short transaction: MariaDB's REPEATABLE READ would otherwise show one snapshot forever.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Gauge
from sqlalchemy import select

from cloud.charging.models import ChargingSession, SessionState
from cloud.configuration import UnknownFamilyError
from cloud.db import Database
from cloud.devices.models import Device
from cloud.telemetry.store import MASTER, TelemetryError, TelemetryStore
from parameters import family_of

log = logging.getLogger(__name__)

RETRY_MS = 2000  # how soon an EventSource reconnects after the stream ends
KEEPALIVE_S = 2.0

OPEN = Gauge("ampfleet_live_views_open", "Live session views (event streams) open now.")


@dataclasses.dataclass(frozen=True)
class Viewer:
    """Whose view: every session of the charger, or (``user_id`` set) only that user's."""

    user_id: int | None


def _node_of(device: Device, parameter_id: str) -> str:
    try:
        return family_of(device.hardware_family).parameter(parameter_id).node
    except (UnknownFamilyError, KeyError):
        return MASTER


def _latest(
    store: TelemetryStore, device: Device, parameter_id: str, since_ms: int
) -> tuple[int, float] | None:
    """(ts, value) of a parameter's newest value if it is numeric and not older than since."""
    try:
        found = store.latest(device.id, _node_of(device, parameter_id)).get(parameter_id)
    except TelemetryError as exc:  # the view degrades to the records; it does not break
        log.warning("telemetry store unavailable for the live view of %s: %s", device.id, exc)
        return None
    if found is None:
        return None
    ts, value = found
    if isinstance(value, bool) or not isinstance(value, int | float) or ts < since_ms:
        return None
    return ts, float(value)


def snapshot(
    database: Database,
    store: TelemetryStore,
    device_id: str,
    viewer: Viewer,
    describe: Callable[[ChargingSession], dict[str, Any]],
) -> dict[str, Any]:
    """What the live view shows now: the newest running session the viewer may see (or
    none), its power and its energy so far."""
    with database.transaction() as session:
        device = session.get(Device, device_id)
        stmt = select(ChargingSession).where(
            ChargingSession.device_id == device_id,
            ChargingSession.state == SessionState.ACTIVE,
        )
        if viewer.user_id is not None:
            stmt = stmt.where(ChargingSession.user_id == viewer.user_id)
        running = session.scalar(stmt.order_by(ChargingSession.started_at.desc()).limit(1))
        described = describe(running) if running is not None else None
    view: dict[str, Any] = {
        "device_id": device_id,
        "session": described,
        "power_w": None,
        "energy_wh": None,
        "measured_at": None,
    }
    if running is None or device is None or running.started_at is None:
        return view
    since = int(running.started_at.timestamp() * 1000)
    power = _latest(store, device, "power_w", since)
    # The charger's own session counter when it has one, else the meter register's progress.
    energy = _latest(store, device, "session_energy_wh", since)
    if energy is None and running.meter_start_wh is not None:
        register = _latest(store, device, "energy_wh", since)
        if register is not None:
            energy = register[0], max(0.0, register[1] - running.meter_start_wh)
    stamps = [reading[0] for reading in (power, energy) if reading is not None]
    view["power_w"] = power[1] if power else None
    view["energy_wh"] = energy[1] if energy else running.energy_wh
    if stamps:
        view["measured_at"] = dt.datetime.fromtimestamp(max(stamps) / 1000, dt.UTC).isoformat()
    return view


def _event(data: dict[str, Any]) -> bytes:
    body = json.dumps(data, default=str, separators=(",", ":"), sort_keys=True)
    return f"event: session\ndata: {body}\n\n".encode()


def stream(
    view: Callable[[], dict[str, Any]],
    poll: float = 1.0,
    keepalive: float = KEEPALIVE_S,
    max_seconds: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """The event stream: ``view()`` when it changes, keep-alive comments, then the end.

    The generator stops when the client goes: the server's write fails and closes it.
    """
    OPEN.inc()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        started = last_write = time.monotonic()
        shown: dict[str, Any] | None = None
        while time.monotonic() - started < max_seconds:
            current = view()
            if current != shown:
                shown = current
                last_write = time.monotonic()
                yield _event(current)
            elif time.monotonic() - last_write >= keepalive:
                last_write = time.monotonic()
                yield b": keep-alive\n\n"
            sleep(poll)
    finally:
        OPEN.dec()
