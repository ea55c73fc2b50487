"""Issue 7 end to end with OCPP charge points (the ocpp library's, over real WebSockets) through
the bridge on both brokers, with the API, the status, config and charging workers: app start
and stop (1.6 RemoteStart/Stop, 2.0.1 RequestStart/Stop), RFID cards known, unknown and
disabled (Authorize against the local list the bridge keeps), a guest inside and outside the
window, the EV unplugged (2.0.1 E09), sessions that happened offline reconciled once, and two
stops at once — each ends with the right record, energy and cost."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from cloud.ocpp.worker import OcppWorker
from tests.charging.acceptance import Rig, expected_cost, rig
from tests.helpers import Client
from tests.link import Link
from tests.ocpp.chargers import basic, connected
from tests.ocpp.support import eventually
from tests.ocpp.test_ocpp16 import now
from tests.ocpp.test_ocpp201 import energy
from tests.services.smtp import SmtpServer


@pytest.fixture
def platform(link: Link, smtp_server: SmtpServer, tmp_path: Path) -> Iterator[Rig]:
    with rig(link, smtp_server, tmp_path) as made:
        yield made


class Station:
    """An OCPP charger registered with the platform, and how to reach it."""

    def __init__(self, platform: Rig, bridge: OcppWorker, ocpp_charger: Any) -> None:
        self.platform = platform
        self.id, self.password = ocpp_charger()
        self.url = f"ws://127.0.0.1:{bridge.port}"

    def connect(self, version: str) -> Any:
        """An async context manager: the charge point, connected (security profile 1)."""
        return connected(self.url, self.id, version, headers=basic(self.id, self.password))

    async def boot(self, cp: Any, version: str) -> None:
        """BootNotification, then wait until the cloud sees the charger online."""
        if version == "1.6":
            await cp.call(
                call16.BootNotification(charge_point_vendor="ACME", charge_point_model="AC-1"),
                suppress=False,
            )
        else:
            await cp.call(
                call201.BootNotification(
                    charging_station={"vendor_name": "ACME", "model": "DC-50"}, reason="PowerUp"
                ),
                suppress=False,
            )
        await eventually(lambda: self.platform.online(self.id), "online")

    async def completed(self, charger_session_id: str) -> dict[str, Any]:
        """The session's record once complete (polled from a thread)."""
        record: dict[str, Any] = await asyncio.to_thread(
            self.platform.completed, self.id, charger_session_id
        )
        return record

    async def sessions(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await asyncio.to_thread(self.platform.sessions, self.id)
        return found


@pytest.fixture
def station(platform: Rig, bridge: OcppWorker, ocpp_charger: Any) -> Callable[[], Station]:
    return lambda: Station(platform, bridge, ocpp_charger)


def priced(record: dict[str, Any], platform: Rig, energy_wh: float, reason: str) -> None:
    """The record is complete, with ``energy_wh``, the tariff's cost and ``reason``."""
    assert record["state"] == "completed" and record["stop_reason"] == reason
    assert record["energy_wh"] == energy_wh
    assert record["tariff_id"] == platform.tariff["id"]
    assert record["cost_cents"] == expected_cost(energy_wh)


async def start_from_app(client: Client, device_id: str) -> dict[str, Any]:
    response = await asyncio.to_thread(
        client.post, f"/devices/{device_id}/sessions", json={"connector": 1}
    )
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


async def stop_from_app(client: Client, session_id: str) -> int:
    response = await asyncio.to_thread(client.post, f"/sessions/{session_id}/stop")
    status: int = response.status_code
    return status


def test_app_start_and_stop_on_ocpp16(platform: Rig, station: Callable[[], Station]) -> None:
    charger = station()
    owner, app = platform.owner_of(charger.id)

    async def scenario() -> None:
        async with charger.connect("1.6") as cp:
            await charger.boot(cp, "1.6")
            requested = await start_from_app(app, charger.id)
            remote = await cp.asked.next_call("RemoteStartTransaction")
            assert remote == {"connector_id": 1, "id_tag": requested["id_tag"]}
            started = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag=remote["id_tag"], meter_start=10_000, timestamp=now()
                ),
                suppress=False,
            )
            assert started.id_tag_info["status"] == "Accepted"
            await eventually(
                lambda: platform.session(app, requested["id"])["state"] == "active", "active"
            )
            assert await stop_from_app(app, requested["id"]) == 202
            asked = await cp.asked.next_call("RemoteStopTransaction")
            assert asked == {"transaction_id": started.transaction_id}
            await cp.call(
                call16.StopTransaction(
                    meter_stop=10_800,
                    timestamp=now(),
                    transaction_id=started.transaction_id,
                    reason="Remote",
                ),
                suppress=False,
            )
            record = await charger.completed(str(started.transaction_id))
            priced(record, platform, 800.0, "remote")
            assert (record["id"], record["source"], record["user_id"]) == (
                requested["id"],
                "app",
                owner["id"],
            )
            assert record["charger_reason"] == "Remote"

    asyncio.run(scenario())


def test_app_start_stop_and_the_ev_unplugged_on_ocpp201(
    platform: Rig, station: Callable[[], Station]
) -> None:
    charger = station()
    owner, app = platform.owner_of(charger.id)
    evse = {"id": 1, "connector_id": 1}

    async def scenario() -> None:
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            requested = await start_from_app(app, charger.id)
            asked = await cp.asked.next_call("RequestStartTransaction")
            assert asked["id_token"] == {"id_token": requested["id_tag"], "type": "Central"}
            await cp.call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=now(-60),
                    trigger_reason="RemoteStart",
                    seq_no=0,
                    transaction_info={
                        "transaction_id": "tx-app",
                        "remote_start_id": asked["remote_start_id"],
                    },
                    id_token=asked["id_token"],
                    evse=evse,
                    meter_value=[energy(5_000, -60, context="Transaction.Begin")],
                ),
                suppress=False,
            )
            await eventually(
                lambda: platform.session(app, requested["id"])["state"] == "active", "active"
            )
            assert await stop_from_app(app, requested["id"]) == 202
            assert await cp.asked.next_call("RequestStopTransaction") == {
                "transaction_id": "tx-app"
            }
            await cp.call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=now(),
                    trigger_reason="RemoteStop",
                    seq_no=1,
                    transaction_info={"transaction_id": "tx-app", "stopped_reason": "Remote"},
                    meter_value=[energy(5_600, 0, context="Transaction.End")],
                ),
                suppress=False,
            )
            record = await charger.completed("tx-app")
            priced(record, platform, 600.0, "remote")
            assert (record["id"], record["user_id"]) == (requested["id"], owner["id"])

            # E09: plug and charge, the cable pulled at the EV side.
            await cp.call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=now(-30),
                    trigger_reason="CablePluggedIn",
                    seq_no=2,
                    transaction_info={"transaction_id": "tx-e09"},
                    evse=evse,
                    meter_value=[energy(6_000, -30, context="Transaction.Begin")],
                ),
                suppress=False,
            )
            await cp.call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=now(),
                    trigger_reason="EVCommunicationLost",
                    seq_no=3,
                    transaction_info={
                        "transaction_id": "tx-e09",
                        "stopped_reason": "EVDisconnected",
                    },
                    meter_value=[energy(6_250, 0, context="Transaction.End")],
                ),
                suppress=False,
            )
            unplugged = await charger.completed("tx-e09")
            priced(unplugged, platform, 250.0, "ev_disconnected")
            assert unplugged["source"] == "free" and unplugged["user_id"] is None

    asyncio.run(scenario())


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_rfid_cards_known_unknown_and_disabled(
    platform: Rig, station: Callable[[], Station], version: str
) -> None:
    charger = station()
    owner, _ = platform.owner_of(charger.id)
    card = platform.card(owner["id"])

    async def authorize(cp: Any, uid: str) -> str:
        if version == "1.6":
            answer = await cp.call(call16.Authorize(id_tag=uid), suppress=False)
            status: str = answer.id_tag_info["status"]
        else:
            token = {"id_token": uid, "type": "ISO14443"}
            answer = await cp.call(call201.Authorize(id_token=token), suppress=False)
            status = answer.id_token_info["status"]
        return status

    async def session_with(cp: Any, uid: str) -> str:
        """A session started and stopped at the charger with the card: its transaction id."""
        if version == "1.6":
            started = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag=uid, meter_start=2_000, timestamp=now(-20)
                ),
                suppress=False,
            )
            await cp.call(
                call16.StopTransaction(
                    meter_stop=2_400,
                    timestamp=now(),
                    transaction_id=started.transaction_id,
                    reason="Local",
                    id_tag=uid,
                ),
                suppress=False,
            )
            return str(started.transaction_id)
        token = {"id_token": uid, "type": "ISO14443"}
        begin = [energy(2_000, -20)]
        await cp.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp=now(-20),
                trigger_reason="Authorized",
                seq_no=0,
                transaction_info={"transaction_id": "tx-card"},
                id_token=token,
                evse={"id": 1, "connector_id": 1},
                meter_value=begin,
            ),
            suppress=False,
        )
        end = [energy(2_400, 0)]
        await cp.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp=now(),
                trigger_reason="StopAuthorized",
                seq_no=1,
                transaction_info={"transaction_id": "tx-card", "stopped_reason": "Local"},
                id_token=token,
                meter_value=end,
            ),
            suppress=False,
        )
        return "tx-card"

    async def scenario() -> None:
        async with charger.connect(version) as cp:
            await charger.boot(cp, version)
            # The bridge sends the charger its local list (1.6 SendLocalList, 2.0.1 D01).
            listed = await cp.asked.next_call("SendLocalList", timeout=30)
            assert card["uid"] in str(listed)

            assert await authorize(cp, card["uid"]) == "Accepted"
            transaction = await session_with(cp, card["uid"])
            record = await charger.completed(transaction)
            priced(record, platform, 400.0, "local")
            assert (record["source"], record["card_id"], record["user_id"]) == (
                "rfid",
                card["id"],
                owner["id"],
            )

            assert await authorize(cp, "DEADBEEF") == "Invalid"
            await eventually(
                lambda: any(
                    s["state"] == "refused" and s["id_tag"] == "DEADBEEF"
                    for s in platform.sessions(charger.id)
                ),
                "the unknown card's refused attempt",
            )

            disabled = await asyncio.to_thread(
                platform.admin.patch, f"/cards/{card['id']}", json={"enabled": False}
            )
            assert disabled.status_code == 200, disabled.get_json()
            await cp.asked.next_call("SendLocalList", timeout=30)  # the card taken off
            assert await authorize(cp, card["uid"]) == "Invalid"
            refusals = await eventually(
                lambda: [
                    s
                    for s in platform.sessions(charger.id)
                    if s["state"] == "refused" and s["card_id"] == card["id"]
                ],
                "the disabled card's refused attempt",
            )
            assert refusals[0]["user_id"] == owner["id"]
            assert len([s for s in await charger.sessions() if s["state"] == "completed"]) == 1

    asyncio.run(scenario())


async def remote_session(
    cp: Any, version: str, meter: tuple[int, int], transaction: str = "tx-remote"
) -> str:
    """What a charger does with the app's start (already asked) and stop: the session's
    transaction id. ``meter``: the register at the start and at the stop, in Wh."""
    if version == "1.6":
        asked = await cp.asked.next_call("RemoteStartTransaction")
        started = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag=asked["id_tag"], meter_start=meter[0], timestamp=now(-10)
            ),
            suppress=False,
        )
        await cp.asked.next_call("RemoteStopTransaction")
        await cp.call(
            call16.StopTransaction(
                meter_stop=meter[1],
                timestamp=now(),
                transaction_id=started.transaction_id,
                reason="Remote",
            ),
            suppress=False,
        )
        return str(started.transaction_id)
    asked = await cp.asked.next_call("RequestStartTransaction")
    await cp.call(
        call201.TransactionEvent(
            event_type="Started",
            timestamp=now(-10),
            trigger_reason="RemoteStart",
            seq_no=0,
            transaction_info={
                "transaction_id": transaction,
                "remote_start_id": asked["remote_start_id"],
            },
            id_token=asked["id_token"],
            evse={"id": 1, "connector_id": 1},
            meter_value=[energy(meter[0], -10)],
        ),
        suppress=False,
    )
    await cp.asked.next_call("RequestStopTransaction")
    await cp.call(
        call201.TransactionEvent(
            event_type="Ended",
            timestamp=now(),
            trigger_reason="RemoteStop",
            seq_no=1,
            transaction_info={"transaction_id": transaction, "stopped_reason": "Remote"},
            meter_value=[energy(meter[1], 0)],
        ),
        suppress=False,
    )
    return transaction


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_guest_inside_and_outside_the_window(
    platform: Rig, station: Callable[[], Station], version: str
) -> None:
    charger = station()
    _, owner = platform.owner_of(charger.id)
    moment = dt.datetime.now(dt.UTC)
    guest, app = platform.invited(
        owner,
        charger.id,
        "guest",
        valid_from=moment - dt.timedelta(minutes=5),
        valid_until=moment + dt.timedelta(hours=1),
    )
    _, later = platform.invited(
        owner,
        charger.id,
        "guest",
        valid_from=moment + dt.timedelta(hours=1),
        valid_until=moment + dt.timedelta(hours=2),
    )

    async def scenario() -> None:
        async with charger.connect(version) as cp:
            await charger.boot(cp, version)
            refused = await asyncio.to_thread(
                later.post, f"/devices/{charger.id}/sessions", json={"connector": 1}
            )
            assert refused.status_code in (403, 404), refused.get_json()
            requested = await start_from_app(app, charger.id)
            assert requested["source"] == "guest"

            async def stop_when_active() -> None:
                await eventually(
                    lambda: platform.session(app, requested["id"])["state"] == "active",
                    "active",
                )
                assert await stop_from_app(app, requested["id"]) == 202

            transaction, _ = await asyncio.gather(
                remote_session(cp, version, (100, 180)), stop_when_active()
            )
            record = await charger.completed(transaction)
            priced(record, platform, 80.0, "remote")
            assert (record["id"], record["source"], record["user_id"]) == (
                requested["id"],
                "guest",
                guest["id"],
            )

    asyncio.run(scenario())


def test_a_session_that_happened_offline_is_reconciled_once_on_ocpp201(
    platform: Rig, station: Callable[[], Station]
) -> None:
    charger = station()
    owner, _ = platform.owner_of(charger.id)
    card = platform.card(owner["id"])
    token = {"id_token": card["uid"], "type": "ISO14443"}

    async def scenario() -> None:
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            await cp.asked.next_call("SendLocalList", timeout=30)  # the card, for offline use
        await eventually(lambda: not platform.online(charger.id), "offline")
        # Back on line: the transaction it ran offline (E04, ``offline`` set), each message
        # sent twice, as a station unsure they arrived does.
        started = call201.TransactionEvent(
            event_type="Started",
            timestamp=now(-900),
            trigger_reason="Authorized",
            seq_no=0,
            offline=True,
            transaction_info={"transaction_id": "tx-offline"},
            id_token=token,
            evse={"id": 1, "connector_id": 1},
            meter_value=[energy(7_000, -900)],
        )
        ended = call201.TransactionEvent(
            event_type="Ended",
            timestamp=now(-300),
            trigger_reason="EVCommunicationLost",
            seq_no=1,
            offline=True,
            transaction_info={"transaction_id": "tx-offline", "stopped_reason": "EVDisconnected"},
            meter_value=[energy(9_500, -300)],
        )
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            for message in (started, started, ended, ended):
                await cp.call(message, suppress=False)
            record = await charger.completed("tx-offline")
            priced(record, platform, 2_500.0, "ev_disconnected")
            assert record["reconciled"] is True and record["card_id"] == card["id"]
            assert record["duration_s"] == 600
            await asyncio.sleep(1)  # room for a second record, were there one
            assert len(await charger.sessions()) == 1

    asyncio.run(scenario())


def test_a_session_that_happened_offline_is_reconciled_once_on_ocpp16(
    platform: Rig, station: Callable[[], Station]
) -> None:
    charger = station()
    owner, _ = platform.owner_of(charger.id)
    card = platform.card(owner["id"])

    async def scenario() -> None:
        async with charger.connect("1.6") as cp:
            await charger.boot(cp, "1.6")
        await eventually(lambda: not platform.online(charger.id), "offline")
        # Back on line: the charger sends the transaction it ran while offline (OCPP 1.6
        # queues transaction messages), and, unsure its messages arrived, sends each twice.
        async with charger.connect("1.6") as cp:
            await charger.boot(cp, "1.6")
            start = call16.StartTransaction(
                connector_id=1, id_tag=card["uid"], meter_start=7_000, timestamp=now(-900)
            )
            started = await cp.call(start, suppress=False)
            again = await cp.call(start, suppress=False)
            assert again.transaction_id == started.transaction_id  # one session, not two
            stop = call16.StopTransaction(
                meter_stop=9_500,
                timestamp=now(-300),
                transaction_id=started.transaction_id,
                reason="EVDisconnected",
            )
            await cp.call(stop, suppress=False)
            await cp.call(stop, suppress=False)
            record = await charger.completed(str(started.transaction_id))
            priced(record, platform, 2_500.0, "ev_disconnected")
            assert record["reconciled"] is True and record["card_id"] == card["id"]
            assert record["duration_s"] == 600
            await asyncio.sleep(1)  # room for a second record, were there one
            assert len(await charger.sessions()) == 1

    asyncio.run(scenario())


def test_concurrent_stops_leave_exactly_one_stop_on_ocpp16(
    platform: Rig, station: Callable[[], Station]
) -> None:
    charger = station()
    _, app = platform.owner_of(charger.id)

    async def scenario() -> None:
        async with charger.connect("1.6") as cp:
            await charger.boot(cp, "1.6")
            requested = await start_from_app(app, charger.id)
            remote = await cp.asked.next_call("RemoteStartTransaction")
            started = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag=remote["id_tag"], meter_start=0, timestamp=now(-5)
                ),
                suppress=False,
            )
            await eventually(
                lambda: platform.session(app, requested["id"])["state"] == "active", "active"
            )
            # The driver stops at the charger while the app's stop is on its way.
            local = cp.call(
                call16.StopTransaction(
                    meter_stop=300,
                    timestamp=now(),
                    transaction_id=started.transaction_id,
                    reason="Local",
                    id_tag=remote["id_tag"],
                ),
                suppress=False,
            )
            api, _ = await asyncio.gather(stop_from_app(app, requested["id"]), local)
            assert api in (202, 409)
            record = await charger.completed(str(started.transaction_id))
            assert record["stop_reason"] == "local" and record["energy_wh"] == 300.0
            assert record["cost_cents"] == expected_cost(300.0)
            await asyncio.sleep(1)
            assert [s["state"] for s in await charger.sessions()] == ["completed"]

    asyncio.run(scenario())


# Issue 13: a Started event without a meter value (OCPP 2.0.1 E01-E02 allow it); the first
# Energy.Active.Import.Register sampled in the transaction (J02) is its start.
def _event201(kind: str, seq: int, at: float, wh: float | None, **info: Any) -> Any:
    return call201.TransactionEvent(
        event_type=kind,
        timestamp=now(at),
        trigger_reason={"Started": "CablePluggedIn", "Updated": "MeterValuePeriodic"}.get(
            kind, "EVCommunicationLost"
        ),
        seq_no=seq,
        transaction_info=info,
        evse={"id": 1, "connector_id": 1} if kind == "Started" else None,
        meter_value=None if wh is None else [energy(wh, at)],
    )


def test_a_start_without_a_meter_value_takes_the_first_one_on_ocpp201(
    platform: Rig, station: Callable[[], Station]
) -> None:
    charger = station()

    async def scenario() -> None:
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            await cp.call(
                _event201("Started", 0, -120, None, transaction_id="tx-13"), suppress=False
            )
            await cp.call(
                _event201("Updated", 1, -60, 2_500, transaction_id="tx-13"), suppress=False
            )
            await cp.call(
                _event201("Ended", 2, 0, 4_000, transaction_id="tx-13", stopped_reason="Local"),
                suppress=False,
            )
            record = await charger.completed("tx-13")
            assert (record["meter_start_wh"], record["meter_stop_wh"]) == (2_500.0, 4_000.0)
            priced(record, platform, 1_500.0, "local")

    asyncio.run(scenario())


def test_the_first_meter_value_outlives_a_reconnect_on_ocpp201(
    platform: Rig, station: Callable[[], Station]
) -> None:
    """The bridge forgets the transaction when the station reconnects (to it or to another
    instance); the first value is kept in the session's record, not in the bridge."""
    charger = station()

    async def scenario() -> None:
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            await cp.call(
                _event201("Started", 0, -120, None, transaction_id="tx-13b"), suppress=False
            )
            await cp.call(
                _event201("Updated", 1, -90, 2_500, transaction_id="tx-13b"), suppress=False
            )
        await eventually(lambda: not platform.online(charger.id), "offline")
        async with charger.connect("2.0.1") as cp:
            await charger.boot(cp, "2.0.1")
            await cp.call(
                _event201("Updated", 2, -60, 3_000, transaction_id="tx-13b"), suppress=False
            )
            await cp.call(
                _event201("Ended", 3, 0, 4_000, transaction_id="tx-13b", stopped_reason="Local"),
                suppress=False,
            )
            record = await charger.completed("tx-13b")
            assert (record["meter_start_wh"], record["meter_stop_wh"]) == (2_500.0, 4_000.0)
            priced(record, platform, 1_500.0, "local")

    asyncio.run(scenario())


def test_an_explicit_start_is_not_replaced_by_the_first_meter_value_on_ocpp16(
    platform: Rig, station: Callable[[], Station]
) -> None:
    """1.6 StartTransaction always carries meterStart: that is the start, whatever the
    MeterValues after it say."""
    charger = station()
    owner, _ = platform.owner_of(charger.id)
    card = platform.card(owner["id"])

    async def scenario() -> None:
        async with charger.connect("1.6") as cp:
            await charger.boot(cp, "1.6")
            started = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag=card["uid"], meter_start=1_000, timestamp=now(-120)
                ),
                suppress=False,
            )
            await cp.call(
                call16.MeterValues(
                    connector_id=1,
                    transaction_id=started.transaction_id,
                    meter_value=[
                        {"timestamp": now(-60), "sampledValue": [{"value": "2500"}]},
                    ],
                ),
                suppress=False,
            )
            await cp.call(
                call16.StopTransaction(
                    meter_stop=4_000,
                    timestamp=now(),
                    transaction_id=started.transaction_id,
                    reason="Local",
                ),
                suppress=False,
            )
            record = await charger.completed(str(started.transaction_id))
            assert (record["meter_start_wh"], record["meter_stop_wh"]) == (1_000.0, 4_000.0)
            priced(record, platform, 3_000.0, "local")

    asyncio.run(scenario())
