"""Refusals and protocol errors: each gets the right HTTP answer or CallError, and the bridge
keeps serving every other charger. The broker plays no part here: the embedded one only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from ocpp.messages import unpack
from ocpp.v16 import call

from cloud.ocpp.worker import OcppWorker
from tests.link import Link
from tests.ocpp.chargers import basic, connected
from tests.ocpp.support import command, eventually, final, status_of
from tests.ocpp.test_ocpp16 import now, url

pytestmark = pytest.mark.parametrize("link", ["embedded"], indirect=True)


async def refused(bridge: OcppWorker, charger_id: str, **kwargs: Any) -> int:
    """The HTTP status of a handshake the bridge refuses."""
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with connected(url(bridge), charger_id, **kwargs):
            pass
    status: int = caught.value.response.status_code
    return status


async def exchange(point: Any, frame: str) -> Any:
    """Send a raw frame; the CallResult or CallError that answers it."""
    await point._connection.send(frame)
    async with asyncio.timeout(10):
        return await point._response_queue.get()


def test_handshakes_are_refused_with_the_right_status(
    link: Link, bridge: OcppWorker, make_bridge: Any, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    suspended_id, suspended_password = ocpp_charger()
    assert (
        link.admin.patch(f"/devices/{suspended_id}", json={"state": "suspended"}).status_code == 200
    )
    native_id, native_password = link.device()  # an MQTT charger is not an OCPP one
    strict = make_bridge(ocpp_no_subprotocol="refuse")

    async def scenario() -> None:
        good = basic(charger_id, password)
        assert await refused(bridge, charger_id, headers=basic(charger_id, "wrong")) == 401
        assert await refused(bridge, charger_id) == 401  # no credentials at all
        assert await refused(bridge, charger_id, headers=basic("someone-else", password)) == 401
        assert await refused(bridge, "no-such-charger", headers=good) == 404
        assert await refused(bridge, native_id, headers=basic(native_id, native_password)) == 404
        assert (
            await refused(bridge, suspended_id, headers=basic(suspended_id, suspended_password))
            == 403
        )
        assert await refused(bridge, charger_id, headers=good, subprotocols=["ocpp2.1"]) == 400
        assert await refused(strict, charger_id, headers=good, subprotocols=[]) == 400
        # Without a subprotocol, the default policy takes the charger for a 1.6 one.
        async with connected(url(bridge), charger_id, headers=good, subprotocols=[]) as cp:
            assert cp._connection.subprotocol is None
            answer = await cp.call(
                call.BootNotification(charge_point_model="M", charge_point_vendor="V"),
                suppress=False,
            )
            assert answer.status == "Accepted"

    asyncio.run(scenario())


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_bad_frames_get_call_errors_and_other_chargers_are_served(
    link: Link, bridge: OcppWorker, ocpp_charger: Any, version: str
) -> None:
    charger_id, password = ocpp_charger()
    bystander_id, bystander_password = ocpp_charger()
    v16 = version == "1.6"

    async def scenario() -> None:
        async with (
            connected(
                url(bridge), bystander_id, headers=basic(bystander_id, bystander_password)
            ) as other,
            connected(url(bridge), charger_id, version, headers=basic(charger_id, password)) as cp,
        ):
            error = await exchange(cp, "this is not JSON")
            assert (error.unique_id, error.error_code) == (
                "-1",
                "FormationViolation" if v16 else "RpcFrameworkError",
            )
            missing = {"chargePointVendor": "V"} if v16 else {"reason": "PowerUp"}
            error = await exchange(cp, json.dumps([2, "m1", "BootNotification", missing]))
            assert (error.unique_id, error.error_code) == ("m1", "ProtocolError")
            extra = json.dumps([2, "m2", "Heartbeat", {"surprise": 1}])
            error = await exchange(cp, extra)
            assert error.error_code == ("FormationViolation" if v16 else "FormatViolation")
            typed = {"connectorId": "one", "errorCode": "NoError", "status": "Available"}
            if not v16:
                typed = {
                    "timestamp": now(),
                    "connectorStatus": "Available",
                    "evseId": "one",
                    "connectorId": 1,
                }
            error = await exchange(cp, json.dumps([2, "m3", "StatusNotification", typed]))
            assert error.error_code == "TypeConstraintViolation"
            error = await exchange(cp, json.dumps([2, "m4", "NoSuchAction", {}]))
            assert error.error_code == "NotImplemented"
            known = "RemoteStartTransaction" if v16 else "RequestStartTransaction"
            error = await exchange(cp, json.dumps([2, "m5", known, {}]))
            assert error.error_code == "NotSupported"
            transfer = [2, "m6", "DataTransfer", {"vendorId": "org.ampfleet.other"}]
            answer = await exchange(cp, json.dumps(transfer))
            assert answer.payload == {"status": "UnknownVendorId"}
            # The same charger goes on, and so does everyone else.
            assert unpack((await exchange(cp, json.dumps([2, "m7", "Heartbeat", {}]))).to_json())
            beat = await other.call(call.Heartbeat(), suppress=False)
            assert beat.current_time

    asyncio.run(scenario())


def test_data_transfer_names_the_unknown_message(
    link: Link, make_bridge: Any, ocpp_charger: Any
) -> None:
    bridge = make_bridge(ocpp_data_transfer="com.acme/ping")
    charger_id, password = ocpp_charger()

    async def scenario() -> None:
        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            ok = await cp.call(
                call.DataTransfer(vendor_id="com.acme", message_id="ping"), suppress=False
            )
            unknown = await cp.call(
                call.DataTransfer(vendor_id="com.acme", message_id="pong"), suppress=False
            )
            assert (ok.status, unknown.status) == ("Accepted", "UnknownMessageId")

    asyncio.run(scenario())


def test_a_lenient_charger_may_deviate_from_the_schema(
    link: Link, bridge: OcppWorker, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    switched = link.admin.put(f"/devices/{charger_id}/ocpp", json={"lenient": True})
    assert switched.status_code == 200 and switched.get_json()["lenient"] is True

    async def scenario() -> None:
        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            answer = await exchange(cp, json.dumps([2, "x1", "Heartbeat", {"vendorExtra": 1}]))
            assert answer.payload["currentTime"]

    asyncio.run(scenario())


def test_a_reconnecting_charger_replaces_its_old_socket(
    link: Link, bridge: OcppWorker, effects: None, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    admin = link.admin

    async def scenario() -> None:
        headers = basic(charger_id, password)
        async with connected(url(bridge), charger_id, headers=headers) as first:
            await eventually(lambda: status_of(admin, charger_id)["online"], "online")
            async with connected(url(bridge), charger_id, headers=headers) as second:
                async with asyncio.timeout(10):
                    await first._connection.wait_closed()
                assert first._connection.close_code == 1000
                sent = command(admin, charger_id, "reboot")
                assert (await second.asked.next_call("Reset")) == {"type": "Soft"}
                await eventually(lambda: final(admin, charger_id, sent["id"]), "answered")
                # The old socket's end did not take the charger offline.
                assert status_of(admin, charger_id)["online"] is True
                assert first.asked.calls == []

    asyncio.run(scenario())


def test_the_bridge_runs_on_uvloop_unless_told_not_to(
    link: Link, make_bridge: Any, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    default, standard = make_bridge(), make_bridge(ocpp_uvloop=False)
    assert type(default._loop).__module__.startswith("uvloop")
    assert not type(standard._loop).__module__.startswith("uvloop")

    async def scenario() -> None:
        async with connected(url(standard), charger_id, headers=basic(charger_id, password)) as cp:
            boot = await cp.call(
                call.BootNotification(charge_point_model="M", charge_point_vendor="V"),
                suppress=False,
            )
            assert boot.status == "Accepted"

    asyncio.run(scenario())
