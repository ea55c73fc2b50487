"""OCPP 2.0.1 charging stations through the bridge, on both brokers and the three security
profiles: TransactionEvent (E01-E03, E09), meter values (J02), NotifyEvent (N08), and the 2.0.1
forms of the commands."""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.v201 import call

from tests.link import Link
from tests.mqtt import Mqtt
from tests.ocpp.conftest import Dial
from tests.ocpp.support import Published, command, eventually, final, latest, status_of
from tests.ocpp.test_ocpp16 import now, publish_auth_list


def energy(wh: float, at: float, **extra: Any) -> dict[str, Any]:
    return {"timestamp": now(at), "sampledValue": [{"value": wh, **extra}]}


def test_a_station_runs_a_transaction_and_shows_in_the_api(
    link: Link, dial: Dial, effects: None, observer: Mqtt, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)
    admin = link.admin
    evse = {"id": 1, "connector_id": 1}
    # The token the station presents is on its local authorization list (contract 4.9).
    publish_auth_list(link, charger_id, 1, {"TOKEN-1": None})

    async def scenario() -> None:
        async with dial.connect(charger_id, password, "2.0.1") as cp:
            await cp.asked.next_call("SendLocalList")  # the bridge holds the list now
            boot = await cp.call(
                call.BootNotification(
                    charging_station={
                        "vendor_name": "ACME",
                        "model": "DC-50",
                        "serial_number": "S-9",
                        "firmware_version": "2.0.0",
                    },
                    reason="PowerUp",
                ),
                suppress=False,
            )
            assert boot.status == "Accepted"
            await eventually(
                lambda: status_of(admin, charger_id)["reported_firmware"] == "2.0.0", "online"
            )
            # The registry follows: the booted firmware is on the device record (issue 13).
            assert admin.get(f"/devices/{charger_id}").get_json()["firmware_version"] == "2.0.0"
            await cp.call(
                call.StatusNotification(
                    timestamp=now(), connector_status="Occupied", evse_id=1, connector_id=1
                ),
                suppress=False,
            )
            # E02: cable first, then the token.
            await cp.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp=now(-120),
                    trigger_reason="CablePluggedIn",
                    seq_no=0,
                    transaction_info={"transaction_id": "tx-201", "charging_state": "EVConnected"},
                    evse=evse,
                    meter_value=[energy(10_000, -120, context="Transaction.Begin")],
                ),
                suppress=False,
            )
            authorized = await cp.call(
                call.TransactionEvent(
                    event_type="Updated",
                    timestamp=now(-110),
                    trigger_reason="Authorized",
                    seq_no=1,
                    transaction_info={"transaction_id": "tx-201", "charging_state": "Charging"},
                    id_token={"id_token": "TOKEN-1", "type": "ISO14443"},
                ),
                suppress=False,
            )
            assert authorized.id_token_info["status"] == "Accepted"
            # J02: meter values during the transaction (kWh with a multiplier, power in W).
            await cp.call(
                call.TransactionEvent(
                    event_type="Updated",
                    timestamp=now(-2),
                    trigger_reason="MeterValuePeriodic",
                    seq_no=2,
                    transaction_info={"transaction_id": "tx-201"},
                    meter_value=[
                        {
                            "timestamp": now(-2),
                            "sampledValue": [
                                {"value": 12.5, "unitOfMeasure": {"unit": "kWh"}},
                                {
                                    "value": 11.0,
                                    "measurand": "Power.Active.Import",
                                    "unitOfMeasure": {"unit": "kW"},
                                },
                                {"value": 64, "measurand": "SoC", "location": "EV"},
                            ],
                        }
                    ],
                ),
                suppress=False,
            )
            values = await eventually(
                lambda: "soc_pct" in latest(admin, charger_id) and latest(admin, charger_id),
                "telemetry stored",
            )
            assert values["energy_wh"] == 12_500.0 and values["power_w"] == 11_000.0
            assert values["soc_pct"] == 64.0 and values["session_energy_wh"] == 2_500.0
            # E09: the cable unplugged at the EV side ends the transaction.
            await cp.call(
                call.TransactionEvent(
                    event_type="Ended",
                    timestamp=now(),
                    trigger_reason="EVCommunicationLost",
                    seq_no=3,
                    transaction_info={
                        "transaction_id": "tx-201",
                        "stopped_reason": "EVDisconnected",
                    },
                    meter_value=[energy(13_000, 0, context="Transaction.End")],
                ),
                suppress=False,
            )
            # Contract 14: the session is the transaction id, the reason in the contract's
            # words (E09, the cable unplugged at the EV), the OCPP one kept.
            stopped = (await published.event(charger_id, "charging.stopped"))["data"]
            assert stopped.pop("duration_s") >= 120
            assert stopped == {
                "session": "tx-201",
                "transaction_id": "tx-201",
                "connector": 1,
                "evse": 1,
                "id_tag": "TOKEN-1",
                "meter_start_wh": 10_000.0,
                "meter_stop_wh": 13_000.0,
                "energy_wh": 3_000.0,
                "reason": "ev_disconnected",
                "ocpp_reason": "EVDisconnected",
                "trigger": "EVCommunicationLost",
            }
            started = (await published.event(charger_id, "charging.started"))["data"]
            assert (started["session"], started["meter_start_wh"]) == ("tx-201", 10_000.0)
            assert (await published.event(charger_id, "charging.state"))["data"]["state"] == (
                "Charging"
            )
            # N08: periodic monitoring events.
            await cp.call(
                call.NotifyEvent(
                    generated_at=now(),
                    seq_no=0,
                    event_data=[
                        {
                            "event_id": 7,
                            "timestamp": now(),
                            "trigger": "Periodic",
                            "actual_value": "41.5",
                            "event_notification_type": "PreconfiguredMonitor",
                            "component": {"name": "EVSE", "evse": {"id": 1}},
                            "variable": {"name": "Temperature"},
                        }
                    ],
                ),
                suppress=False,
            )
            periodic = (await published.event(charger_id, "ocpp.event"))["data"]
            assert (periodic["trigger"], periodic["variable"], periodic["value"]) == (
                "Periodic",
                "Temperature",
                "41.5",
            )
            await cp.call(
                call.FirmwareStatusNotification(status="Installed", request_id=1), suppress=False
            )
            signed = await cp.call(
                call.SignCertificate(csr="CSR", certificate_type="ChargingStationCertificate"),
                suppress=False,
            )
            assert signed.status == "Accepted"
            transfer = await cp.call(
                call.DataTransfer(vendor_id="org.ampfleet", message_id="m"), suppress=False
            )
            assert transfer.status == "Accepted"
            # The observer is another subscriber: wait for what it has not received yet.
            occupied = (await published.event(charger_id, "connector.status"))["data"]
            assert occupied == {"connector": 1, "evse": 1, "status": "Occupied"}
            firmware = (await published.event(charger_id, "firmware.status"))["data"]
            assert firmware["status"] == "Installed"
        await eventually(lambda: not status_of(admin, charger_id)["online"], "offline")

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})


def test_api_commands_reach_a_station_in_their_201_form(
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
        async with dial.connect(charger_id, password, "2.0.1") as cp:
            await eventually(lambda: status_of(admin, charger_id)["online"], "online")
            sent = command(admin, charger_id, "charging.start", connector=1, id_tag="T-9")
            start = await cp.asked.next_call("RequestStartTransaction")
            assert start["id_token"] == {"id_token": "T-9", "type": "Central"}
            assert start["evse_id"] == 1 and isinstance(start["remote_start_id"], int)
            assert (await done(sent))["state"] == "succeeded"

            await cp.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp=now(),
                    trigger_reason="RemoteStart",
                    seq_no=0,
                    transaction_info={"transaction_id": "abc-1"},
                    evse={"id": 1, "connector_id": 1},
                ),
                suppress=False,
            )
            sent = command(admin, charger_id, "charging.stop", connector=1)
            assert (await cp.asked.next_call("RequestStopTransaction")) == {
                "transaction_id": "abc-1"
            }
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "reboot")
            assert (await cp.asked.next_call("Reset")) == {"type": "OnIdle"}
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "config.get", key="heartbeat_period_s")
            asked = await cp.asked.next_call("GetVariables")
            assert asked["get_variable_data"] == [
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
            ]
            assert (await done(sent))["result"]["values"] == {
                "OCPPCommCtrlr.HeartbeatInterval": "300"
            }

            cp.asked.refuse.add("SetVariables")
            sent = command(admin, charger_id, "config.set", key="AuthCtrlr.Enabled", value="true")
            asked = await cp.asked.next_call("SetVariables")
            assert asked["set_variable_data"][0]["attribute_value"] == "true"
            refused = await done(sent)
            assert (refused["state"], refused["reason"]) == ("rejected", "Rejected")

            sent = command(
                admin, charger_id, "charging_profile.set", connector=0, limit=22000, unit="W"
            )
            profile = await cp.asked.next_call("SetChargingProfile")
            assert profile["evse_id"] == 0
            assert profile["charging_profile"]["charging_profile_purpose"] == (
                "ChargingStationMaxProfile"
            )
            assert (await done(sent))["state"] == "succeeded"

            sent = command(
                admin, charger_id, "firmware.publish", url="https://lc/fw.bin", md5="a" * 32
            )
            asked = await cp.asked.next_call("PublishFirmware")
            assert (asked["location"], asked["checksum"]) == ("https://lc/fw.bin", "a" * 32)
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "firmware.update", url="https://fw/2.1.bin")
            asked = await cp.asked.next_call("UpdateFirmware")
            assert asked["firmware"]["location"] == "https://fw/2.1.bin"
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "connector.unlock", connector=1)
            assert (await cp.asked.next_call("UnlockConnector")) == {
                "evse_id": 1,
                "connector_id": 1,
            }
            assert (await done(sent))["state"] == "succeeded"

            sent = command(admin, charger_id, "certificate.signed", certificate_chain="PEM")
            asked = await cp.asked.next_call("CertificateSigned")
            assert asked["certificate_chain"] == "PEM"
            assert (await done(sent))["state"] == "succeeded"

    asyncio.run(scenario())
