"""OCPP 1.6J chargers through the bridge, on the embedded broker and on Mosquitto, and the main
scenarios on the three security profiles (``dial``): what a charger sends becomes contract
messages seen through the API, and what the API sends reaches it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from ocpp.v16 import call

from cloud.ocpp.worker import OcppWorker
from firmware.core import contract
from tests.link import Link
from tests.mqtt import Mqtt
from tests.ocpp.chargers import basic, connected
from tests.ocpp.conftest import Dial
from tests.ocpp.support import Published, command, eventually, final, latest, status_of


def publish_auth_list(
    link: Link, charger_id: str, version: int | None, tokens: dict[str, int | None]
) -> None:
    """The cloud's retained local authorization list of a charger (contract 4.9), published on
    the service account; ``version`` None clears it."""
    payload = b"" if version is None else contract.encode_auth_list(version, tokens)
    with link.service() as cloud:
        sent = cloud.client.publish(
            contract.topic(charger_id, contract.AUTH_LIST), payload, 1, retain=True
        )
        sent.wait_for_publish(20)


def now(offset_s: float = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def url(bridge: OcppWorker) -> str:
    return f"ws://127.0.0.1:{bridge.port}"


def sample(value: str, measurand: str | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"value": value, **extra}
    if measurand:
        item["measurand"] = measurand
    return item


def test_a_charger_boots_charges_and_shows_in_the_api(
    link: Link, dial: Dial, effects: None, observer: Mqtt, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    assert len(password) == 40  # OCPP bounds Basic-auth passwords (1.6: 40 hex digits)
    published = Published(observer)
    admin = link.admin
    # The card the charger presents is on its local authorization list (contract 4.9).
    publish_auth_list(link, charger_id, 1, {"TAG-1": None})

    async def scenario() -> None:
        async with dial.connect(charger_id, password) as cp:
            await cp.asked.next_call("SendLocalList")  # the bridge holds the list now
            boot = await cp.call(
                call.BootNotification(
                    charge_point_model="Wallbox X",
                    charge_point_vendor="ACME",
                    charge_point_serial_number="SN-1",
                    firmware_version="3.1.4",
                ),
                suppress=False,
            )
            assert boot.status == "Accepted" and boot.interval == 300
            status = await eventually(
                lambda: (
                    status_of(admin, charger_id)["reported_firmware"] == "3.1.4"
                    and status_of(admin, charger_id)
                ),
                "online with the booted firmware",
            )
            assert status["online"] is True
            # The registry follows: the booted firmware is on the device record (issue 13).
            assert admin.get(f"/devices/{charger_id}").get_json()["firmware_version"] == "3.1.4"
            await eventually(
                lambda: admin.get(f"/devices/{charger_id}/ocpp").get_json()["vendor"] == "ACME",
                "boot recorded",
            )
            ocpp = admin.get(f"/devices/{charger_id}/ocpp").get_json()
            assert (ocpp["model"], ocpp["serial_number"], ocpp["ocpp_version"]) == (
                "Wallbox X",
                "SN-1",
                "1.6",
            )

            beat = await cp.call(call.Heartbeat(), suppress=False)
            assert beat.current_time
            await cp.call(
                call.StatusNotification(
                    connector_id=1, error_code="NoError", status="Preparing", timestamp=now()
                ),
                suppress=False,
            )
            auth = await cp.call(call.Authorize(id_tag="TAG-1"), suppress=False)
            assert auth.id_tag_info["status"] == "Accepted"
            started = await cp.call(
                call.StartTransaction(
                    connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp=now(-60)
                ),
                suppress=False,
            )
            assert isinstance(started.transaction_id, int)
            await cp.call(
                call.MeterValues(
                    connector_id=1,
                    transaction_id=started.transaction_id,
                    meter_value=[
                        {
                            "timestamp": now(-1),
                            "sampledValue": [
                                sample("2.5", unit="kWh"),
                                sample("7360.5", "Power.Active.Import", unit="W"),
                                sample("231.0", "Voltage", phase="L1-N", unit="V"),
                                sample("12", "RPM"),  # no parameter of the family: dropped
                            ],
                        }
                    ],
                ),
                suppress=False,
            )
            values = await eventually(
                lambda: "power_w" in latest(admin, charger_id) and latest(admin, charger_id),
                "telemetry stored",
            )
            assert values["energy_wh"] == 2500.0 and values["power_w"] == 7360.5
            assert values["voltage_l1_v"] == 231.0 and values["session_energy_wh"] == 1500.0
            assert values["session_s"] >= 59
            stopped = await cp.call(
                call.StopTransaction(
                    meter_stop=3000,
                    timestamp=now(),
                    transaction_id=started.transaction_id,
                    reason="EVDisconnected",
                ),
                suppress=False,
            )
            assert stopped.id_tag_info is None
            # Contract 14: the session is the transaction id; the stop reason in the
            # contract's words, the OCPP one kept.
            event = (await published.event(charger_id, "charging.stopped"))["data"]
            assert event["session"] == str(started.transaction_id)
            assert event["energy_wh"] == 2000.0 and event["meter_stop_wh"] == 3000.0
            assert (event["reason"], event["ocpp_reason"]) == ("ev_disconnected", "EVDisconnected")
            assert event["id_tag"] == "TAG-1" and event["connector"] == 1
            assert event["duration_s"] >= 60
            start_event = (await published.event(charger_id, "charging.started"))["data"]
            assert start_event["session"] == str(started.transaction_id)
            assert start_event["id_tag"] == "TAG-1" and start_event["connector"] == 1
            assert start_event["meter_start_wh"] == 1000.0

            await cp.call(call.FirmwareStatusNotification(status="Downloading"), suppress=False)
            assert (await published.event(charger_id, "firmware.status"))["data"] == {
                "status": "Downloading"
            }
            transfer = await cp.call(
                call.DataTransfer(vendor_id="org.ampfleet", message_id="hello", data="x"),
                suppress=False,
            )
            assert transfer.status == "Accepted"
            unknown_vendor = await cp.call(
                call.DataTransfer(vendor_id="com.other", message_id="x"), suppress=False
            )
            assert unknown_vendor.status == "UnknownVendorId"
            signed = await cp.call(call.SignCertificate(csr="-----BEGIN CSR-----"), suppress=False)
            assert signed.status == "Accepted"
            assert (await published.event(charger_id, "certificate.sign_requested"))["data"][
                "csr"
            ] == "-----BEGIN CSR-----"
            connector = (await published.event(charger_id, "connector.status"))["data"]
            assert connector == {"connector": 1, "status": "Preparing", "error_code": "NoError"}
            hello = (await published.event(charger_id, "ocpp.data_transfer"))["data"]
            assert hello["message_id"] == "hello"
        # The socket closed: the bridge says so, to the API and to every subscriber (the
        # observer may receive it after the status worker did: wait for it).
        await eventually(lambda: not status_of(admin, charger_id)["online"], "offline")
        await eventually(
            lambda: [s["state"] for s in published.of(charger_id, "status")][-1:] == ["offline"],
            "offline published",
        )

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})
    statuses = [s["state"] for s in published.of(charger_id, "status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"


def test_api_commands_reach_the_charger_and_their_results_come_back(
    link: Link, dial: Dial, effects: None, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    admin = link.admin

    async def done(sent: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await eventually(
            lambda: final(admin, charger_id, sent["id"]), f"{sent['name']} answered"
        )
        return result

    async def scenario() -> None:
        async with dial.connect(charger_id, password) as cp:
            await cp.call(
                call.BootNotification(charge_point_model="M", charge_point_vendor="V"),
                suppress=False,
            )
            await eventually(lambda: status_of(admin, charger_id)["online"], "online")

            sent = command(admin, charger_id, "charging.start", connector=1)
            assert (await cp.asked.next_call("RemoteStartTransaction")) == {
                "id_tag": "ampfleet-remote",
                "connector_id": 1,
            }
            assert (await done(sent))["state"] == "succeeded"

            started = await cp.call(
                call.StartTransaction(
                    connector_id=1, id_tag="ampfleet-remote", meter_start=0, timestamp=now()
                ),
                suppress=False,
            )
            sent = command(admin, charger_id, "charging.stop", connector=1)
            assert (await cp.asked.next_call("RemoteStopTransaction")) == {
                "transaction_id": started.transaction_id
            }
            assert (await done(sent))["state"] == "succeeded"

            cp.asked.refuse.add("Reset")
            sent = command(admin, charger_id, "reboot", mode="hard")
            assert (await cp.asked.next_call("Reset")) == {"type": "Hard"}
            refused = await done(sent)
            assert refused["state"] == "rejected" and refused["reason"] == "Rejected"

            sent = command(admin, charger_id, "config.get", key="heartbeat_period_s")
            assert (await cp.asked.next_call("GetConfiguration")) == {"key": ["HeartbeatInterval"]}
            got = await done(sent)
            assert got["result"]["values"] == {"HeartbeatInterval": "300"}

            sent = command(
                admin, charger_id, "config.set", key="MeterValueSampleInterval", value="30"
            )
            assert (await cp.asked.next_call("ChangeConfiguration")) == {
                "key": "MeterValueSampleInterval",
                "value": "30",
            }
            assert (await done(sent))["state"] == "succeeded"

            sent = command(
                admin, charger_id, "charging_profile.set", connector=1, limit=16, unit="A"
            )
            profile = await cp.asked.next_call("SetChargingProfile")
            assert profile["connector_id"] == 1
            schedule = profile["cs_charging_profiles"]["charging_schedule"]
            assert schedule["charging_rate_unit"] == "A"
            assert schedule["charging_schedule_period"] == [{"start_period": 0, "limit": 16.0}]
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "charging_profile.clear", profile_id=1)
            assert (await cp.asked.next_call("ClearChargingProfile")) == {"id": 1}
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "trigger", message="StatusNotification", connector=1)
            assert (await cp.asked.next_call("TriggerMessage"))["requested_message"] == (
                "StatusNotification"
            )
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "data_transfer", vendor_id="com.acme", data="ping")
            assert (await cp.asked.next_call("DataTransfer"))["vendor_id"] == "com.acme"
            assert (await done(sent))["result"] == {"status": "Accepted", "data": "pong"}

            sent = command(admin, charger_id, "firmware.update", url="https://fw.example/x.bin")
            assert (await cp.asked.next_call("UpdateFirmware"))["location"] == (
                "https://fw.example/x.bin"
            )
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "certificate.signed", certificate_chain="PEM")
            assert (await cp.asked.next_call("CertificateSigned")) == {"certificate_chain": "PEM"}
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "connector.unlock", connector=1)
            assert (await cp.asked.next_call("UnlockConnector")) == {"connector_id": 1}
            assert (await done(sent))["state"] == "succeeded"

            # L03 publish-firmware is 2.0.1 only; a stop with no transaction has nothing to stop.
            sent = command(admin, charger_id, "firmware.publish", url="https://x/y", md5="0" * 32)
            refused = await done(sent)
            assert (refused["state"], refused["reason"]) == (
                "rejected",
                "not supported by OCPP 1.6",
            )
            sent = command(admin, charger_id, "charging.stop", connector=2)
            assert (await done(sent))["reason"] == "no transaction on connector 2"

    asyncio.run(scenario())


def test_remote_configuration_reaches_a_16_charger(
    link: Link, bridge: OcppWorker, effects: None, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    admin = link.admin

    async def scenario() -> None:
        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            await eventually(lambda: status_of(admin, charger_id)["online"], "online")
            response = admin.put(
                f"/devices/{charger_id}/parameters/heartbeat_period_s", json={"value": 600}
            )
            assert response.status_code == 202, response.get_json()
            change = response.get_json()
            assert (await cp.asked.next_call("ChangeConfiguration")) == {
                "key": "HeartbeatInterval",
                "value": "600",
            }

            def state() -> str | None:
                body = admin.get(f"/devices/{charger_id}/parameters").get_json()
                found = [c["state"] for c in body["changes"] if c["id"] == change["id"]]
                return found[0] if found and found[0] != "pending" else None

            assert await eventually(state, "change resolved") == "applied"
            body = admin.get(f"/devices/{charger_id}/parameters").get_json()
            assert body["reported"] == {"heartbeat_period_s": 600}

    asyncio.run(scenario())


def test_a_firmware_offer_is_installed_like_a_native_update(
    link: Link, bridge: OcppWorker, observer: Mqtt, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)
    offer = contract.encode_ota("3.2.0", "https://fw.example/3.2.0.bin", "a" * 64, 1024)

    async def scenario() -> None:
        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            await cp.call(
                call.BootNotification(
                    charge_point_model="M", charge_point_vendor="V", firmware_version="3.1.0"
                ),
                suppress=False,
            )
            # The cloud offers an image (contract 4.7): retained, on the charger's ota topic.
            with link.service() as cloud:
                cloud.client.publish(
                    contract.topic(charger_id, contract.OTA), offer, 1, retain=True
                )
            asked = await cp.asked.next_call("UpdateFirmware")
            assert asked["location"] == "https://fw.example/3.2.0.bin"
            for state in ("Downloading", "Downloaded", "Installing", "Installed"):
                await cp.call(call.FirmwareStatusNotification(status=state), suppress=False)
            await eventually(
                lambda: (
                    [s["state"] for s in published.of(charger_id, "ota/status")][-1:]
                    == ["installed"]
                ),
                "installed",
            )
            # After the reboot, the charger boots the offered version: the update is confirmed.
            await cp.call(
                call.BootNotification(
                    charge_point_model="M", charge_point_vendor="V", firmware_version="3.2.0"
                ),
                suppress=False,
            )
            await eventually(
                lambda: (
                    [s["state"] for s in published.of(charger_id, "ota/status")][-1:]
                    == ["confirmed"]
                ),
                "confirmed",
            )
        with link.service() as cloud:  # the cloud clears a finished offer
            cloud.client.publish(contract.topic(charger_id, contract.OTA), b"", 1, retain=True)

    asyncio.run(scenario())
    states = [s["state"] for s in published.of(charger_id, "ota/status")]
    # The bridge's own "downloading" (the charger took the UpdateFirmware) may or may not
    # precede the charger's first report; the states never go back.
    steps = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert steps == ["downloading", "verifying", "installed", "confirmed"]
    assert {s["version"] for s in published.of(charger_id, "ota/status")} == {"3.2.0"}
