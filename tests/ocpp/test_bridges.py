"""What no single bridge instance may keep to itself (docs/ocpp.md, "Several bridges"): the
token of an app start is valid on every bridge, a command for a charger held by no bridge
waits for it (until it expires), and a bridge that dies takes its chargers offline with it.
Real brokers (embedded and Mosquitto), real WebSockets, bridges as instances of their own
and, for the death, as a process killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from sqlalchemy import select

from cloud.db import get_database
from cloud.devicelink.accounts import bridge_password
from cloud.devicelink.client import KEEPALIVE
from cloud.ocpp.models import OcppCharger
from cloud.ocpp.worker import OcppWorker
from tests.ingest.test_pipeline import wait_for
from tests.link import Link, app_settings
from tests.ocpp.chargers import basic, connected
from tests.ocpp.support import eventually, final, status_of
from tests.ocpp.test_authorization import WAIT, authorize, start
from tests.ocpp.test_ocpp16 import url

versions = pytest.mark.parametrize("version", ["1.6", "2.0.1"])
AMPFLEET = str(Path(sys.executable).with_name("ampfleet"))


async def boot(cp: Any, version: str) -> None:
    """A BootNotification, as a charger sends first."""
    if version == "1.6":
        request: Any = call16.BootNotification(charge_point_model="M", charge_point_vendor="V")
    else:
        request = call201.BootNotification(
            charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"
        )
    await cp.call(request, suppress=False)


@versions
def test_an_app_start_sent_through_one_bridge_is_accepted_by_another(
    link: Link,
    make_bridge: Callable[..., OcppWorker],
    effects: None,
    ocpp_charger: Any,
    version: str,
) -> None:
    """The charger takes RemoteStartTransaction from bridge A, reconnects to bridge B (a
    load balancer's choice, or A restarted) and starts with the app's token there."""
    charger_id, password = ocpp_charger()
    first, second = make_bridge(), make_bridge()
    admin = link.admin

    async def scenario() -> None:
        async with connected(
            url(first), charger_id, version, headers=basic(charger_id, password)
        ) as cp:
            await boot(cp, version)
            await eventually(lambda: status_of(admin, charger_id)["online"], "online on A")
            response = await asyncio.to_thread(
                admin.post, f"/devices/{charger_id}/sessions", json={"connector": 1}
            )
            assert response.status_code == 202, response.get_json()
            if version == "1.6":
                tag = (await cp.asked.next_call("RemoteStartTransaction", WAIT))["id_tag"]
            else:
                asked = await cp.asked.next_call("RequestStartTransaction", WAIT)
                tag = asked["id_token"]["id_token"]
            assert tag.startswith("app-")
        # Bridge B never saw the start, and the charger has no card list at all.
        async with connected(
            url(second), charger_id, version, headers=basic(charger_id, password)
        ) as cp:
            await boot(cp, version)
            assert (await authorize(cp, version, tag))["status"] == "Accepted"
            assert (await start(cp, version, tag, "tx-moved"))["status"] == "Accepted"
            # Upper case is the same token (OCPP id tokens are case-insensitive); a token the
            # cloud never sent is not.
            assert (await authorize(cp, version, tag.upper()))["status"] == "Accepted"
            assert (await authorize(cp, version, "app-000000000000"))["status"] == "Invalid"

    asyncio.run(scenario())


def test_commands_sent_while_the_charger_is_on_no_bridge_wait_for_it(
    link: Link, bridge: OcppWorker, effects: None, ocpp_charger: Any
) -> None:
    """Sent while the charger is offline: the valid command is delivered when it connects
    and its result reaches the cloud; the one that expired meanwhile is not delivered and is
    reported expired."""
    charger_id, password = ocpp_charger()
    admin = link.admin

    def send(name: str, timeout: int, **args: Any) -> dict[str, Any]:
        body = {"name": name, "args": args, "timeout": timeout}
        response = admin.post(f"/devices/{charger_id}/commands", json=body)
        assert response.status_code == 202, response.get_json()
        sent: dict[str, Any] = response.get_json()
        return sent

    expiring = send("reboot", 1, mode="hard")
    waiting = send("config.get", 300, key="heartbeat_period_s")
    time.sleep(1.5)  # the reboot's `expires` passes while the charger is away

    async def scenario() -> None:
        async with connected(
            url(bridge), charger_id, "1.6", headers=basic(charger_id, password)
        ) as cp:
            asked = await cp.asked.next_call("GetConfiguration", WAIT)
            assert asked == {"key": ["HeartbeatInterval"]}
            got = await eventually(
                lambda: final(admin, charger_id, waiting["id"]), "config.get answered"
            )
            assert got["state"] == "succeeded"
            assert got["result"]["values"] == {"HeartbeatInterval": "300"}
            gone = await eventually(
                lambda: final(admin, charger_id, expiring["id"]), "reboot answered"
            )
            assert gone["state"] == "rejected" and gone["reason"] == "expired"
            assert not [name for name, _ in cp.asked.calls if name == "Reset"]

    asyncio.run(scenario())


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def bridge_process(link: Link, data_dir: Path, client_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """``ampfleet worker ocpp`` as a process of its own on ``link``'s broker and database."""
    settings = app_settings(link.app)
    port = free_port()
    env = {
        **os.environ,
        "AMPFLEET_DATA_DIR": str(data_dir),
        "AMPFLEET_DATABASE_URL": settings.database_url,
        "AMPFLEET_BROKER": "external",
        "AMPFLEET_BROKER_URL": f"mqtt://{link.host}:{link.port}",
        "AMPFLEET_BROKER_BRIDGE_USER": settings.broker_bridge_user,
        "AMPFLEET_BROKER_BRIDGE_PASSWORD": bridge_password(settings),
        "AMPFLEET_OCPP_PORT": str(port),
        "AMPFLEET_OCPP_HOST": "127.0.0.1",
        "AMPFLEET_TESTING": "true",
        "AMPFLEET_PASSWORD_KDF": settings.password_kdf,
        "AMPFLEET_METRICS_PORT": "0",
        "AMPFLEET_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [AMPFLEET, "worker", "ocpp", "--client-id", client_id], env=env, cwd=data_dir
    )
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, what="the bridge process listening", timeout=60)
        process.port = port  # type: ignore[attr-defined]
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def held_by(link: Link, charger_ids: list[str]) -> set[str | None]:
    """The bridges the records say hold these chargers."""
    with get_database(link.app).session() as session:
        rows = session.scalars(
            select(OcppCharger.bridge_id).where(OcppCharger.device_id.in_(charger_ids))
        ).all()
    return set(rows) if len(rows) == len(charger_ids) else set()


def test_a_bridge_killed_takes_its_chargers_offline(
    link: Link, effects: None, ocpp_charger: Any, tmp_path: Path
) -> None:
    """SIGKILL: no socket is closed politely, no offline published by the bridge; the
    broker's will of the bridge's connection is, and the status worker marks the chargers
    it held offline within the keepalive window."""
    chargers = [ocpp_charger() for _ in range(2)]
    admin = link.admin
    client_id = f"ocpp-{uuid.uuid4().hex[:8]}"
    with bridge_process(link, tmp_path, client_id) as process:
        where = f"ws://127.0.0.1:{process.port}"  # type: ignore[attr-defined]

        async def scenario() -> None:
            async with contextlib.AsyncExitStack() as stack:
                for charger_id, password in chargers:
                    cp = await stack.enter_async_context(
                        connected(where, charger_id, "1.6", headers=basic(charger_id, password))
                    )
                    await boot(cp, "1.6")
                for charger_id, _ in chargers:
                    await eventually(
                        lambda c=charger_id: status_of(admin, c)["online"], f"{charger_id} online"
                    )
                # The records name the bridge that holds them (written in batches).
                await eventually(
                    lambda: held_by(link, [c for c, _ in chargers]) == {client_id},
                    "the records naming the bridge",
                )
                os.kill(process.pid, signal.SIGKILL)
                for charger_id, _ in chargers:
                    await eventually(
                        lambda c=charger_id: not status_of(admin, c)["online"],
                        f"{charger_id} offline after the bridge died",
                        timeout=KEEPALIVE * 1.5,
                    )

        asyncio.run(scenario())
