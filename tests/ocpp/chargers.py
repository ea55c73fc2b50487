"""Charge points for the tests, built on the ocpp library (its ``ChargePoint`` and version
classes) over real WebSockets: they answer the calls of the central system the way a charger
does, record what they were asked, and let a test send any request, well-formed or not."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201

TIMEOUT = 10.0


def basic(user: str, password: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Recorder:
    """What a charge point was asked by the central system, and how it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.refuse: set[str] = set()  # actions answered Rejected

    def note(self, action: str, payload: dict[str, Any]) -> str:
        self.calls.append((action, payload))
        self.arrived.set()
        return "Rejected" if action in self.refuse else "Accepted"

    async def next_call(self, action: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The payload of the next (or an earlier unclaimed) call of ``action``."""
        async with asyncio.timeout(timeout):
            while True:
                for index, (name, payload) in enumerate(self.calls):
                    if name == action:
                        del self.calls[index]
                        return payload
                self.arrived.clear()
                await self.arrived.wait()


class Charger16(ChargePoint16):
    """An OCPP 1.6J charge point, with a local authorization list (1.6 5.15, 5.9)."""

    def __init__(self, charger_id: str, connection: Any) -> None:
        super().__init__(charger_id, connection, response_timeout=TIMEOUT)
        self.asked = Recorder()
        self.list_version = 0  # 1.6 5.9: 0 is no list, -1 no support for lists
        self.local_list: dict[str, dict[str, Any]] = {}
        self.list_status = "Accepted"  # or Failed, NotSupported, VersionMismatch

    @on("SendLocalList")
    def send_local_list(self, **payload: Any) -> Any:
        self.asked.note("SendLocalList", payload)
        status = self.list_status
        if status == "Accepted":
            self.list_version = payload["list_version"]
            entries = payload.get("local_authorization_list") or []
            self.local_list = {e["id_tag"]: e.get("id_tag_info", {}) for e in entries}
        return result16.SendLocalList(status=status)

    @on("GetLocalListVersion")
    def get_local_list_version(self, **payload: Any) -> Any:
        self.asked.note("GetLocalListVersion", payload)
        return result16.GetLocalListVersion(list_version=self.list_version)

    @on("RemoteStartTransaction")
    def remote_start(self, **payload: Any) -> Any:
        return result16.RemoteStartTransaction(
            status=self.asked.note("RemoteStartTransaction", payload)
        )

    @on("RemoteStopTransaction")
    def remote_stop(self, **payload: Any) -> Any:
        return result16.RemoteStopTransaction(
            status=self.asked.note("RemoteStopTransaction", payload)
        )

    @on("Reset")
    def reset(self, **payload: Any) -> Any:
        return result16.Reset(status=self.asked.note("Reset", payload))

    @on("UnlockConnector")
    def unlock(self, **payload: Any) -> Any:
        self.asked.note("UnlockConnector", payload)
        return result16.UnlockConnector(status="Unlocked")

    @on("GetConfiguration")
    def get_configuration(self, **payload: Any) -> Any:
        self.asked.note("GetConfiguration", payload)
        keys = payload.get("key") or ["HeartbeatInterval"]
        known = [
            {"key": k, "readonly": False, "value": "300"} for k in keys if k == "HeartbeatInterval"
        ]
        unknown = [k for k in keys if k != "HeartbeatInterval"]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("ChangeConfiguration")
    def change_configuration(self, **payload: Any) -> Any:
        return result16.ChangeConfiguration(status=self.asked.note("ChangeConfiguration", payload))

    @on("SetChargingProfile")
    def set_profile(self, **payload: Any) -> Any:
        return result16.SetChargingProfile(status=self.asked.note("SetChargingProfile", payload))

    @on("ClearChargingProfile")
    def clear_profile(self, **payload: Any) -> Any:
        return result16.ClearChargingProfile(
            status=self.asked.note("ClearChargingProfile", payload)
        )

    @on("UpdateFirmware")
    def update_firmware(self, **payload: Any) -> Any:
        self.asked.note("UpdateFirmware", payload)
        return result16.UpdateFirmware()

    @on("TriggerMessage")
    def trigger(self, **payload: Any) -> Any:
        return result16.TriggerMessage(status=self.asked.note("TriggerMessage", payload))

    @on("DataTransfer")
    def data_transfer(self, **payload: Any) -> Any:
        status = self.asked.note("DataTransfer", payload)
        return result16.DataTransfer(status=status, data="pong")

    @on("CertificateSigned")
    def certificate_signed(self, **payload: Any) -> Any:
        return result16.CertificateSigned(status=self.asked.note("CertificateSigned", payload))


class Charger201(ChargePoint201):
    """An OCPP 2.0.1 charging station, with a local authorization list (D01, D02)."""

    def __init__(self, charger_id: str, connection: Any) -> None:
        super().__init__(charger_id, connection, response_timeout=TIMEOUT)
        self.asked = Recorder()
        self.list_version = 0  # D02: 0 is no list
        self.local_list: dict[str, dict[str, Any]] = {}
        self.list_status = "Accepted"  # or Failed, VersionMismatch

    @on("SendLocalList")
    def send_local_list(self, **payload: Any) -> Any:
        self.asked.note("SendLocalList", payload)
        status = self.list_status
        if status == "Accepted":
            self.list_version = payload["version_number"]
            entries = payload.get("local_authorization_list") or []
            self.local_list = {
                e["id_token"]["id_token"]: e.get("id_token_info", {}) for e in entries
            }
        return result201.SendLocalList(status=status)

    @on("GetLocalListVersion")
    def get_local_list_version(self, **payload: Any) -> Any:
        self.asked.note("GetLocalListVersion", payload)
        return result201.GetLocalListVersion(version_number=self.list_version)

    @on("RequestStartTransaction")
    def request_start(self, **payload: Any) -> Any:
        status = self.asked.note("RequestStartTransaction", payload)
        return result201.RequestStartTransaction(status=status)

    @on("RequestStopTransaction")
    def request_stop(self, **payload: Any) -> Any:
        return result201.RequestStopTransaction(
            status=self.asked.note("RequestStopTransaction", payload)
        )

    @on("Reset")
    def reset(self, **payload: Any) -> Any:
        return result201.Reset(status=self.asked.note("Reset", payload))

    @on("UnlockConnector")
    def unlock(self, **payload: Any) -> Any:
        self.asked.note("UnlockConnector", payload)
        return result201.UnlockConnector(status="Unlocked")

    @on("GetVariables")
    def get_variables(self, **payload: Any) -> Any:
        self.asked.note("GetVariables", payload)
        results = []
        for item in payload["get_variable_data"]:
            known = item["variable"]["name"] == "HeartbeatInterval"
            results.append(
                {
                    "attribute_status": "Accepted" if known else "UnknownVariable",
                    "component": item["component"],
                    "variable": item["variable"],
                    **({"attribute_value": "300"} if known else {}),
                }
            )
        return result201.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def set_variables(self, **payload: Any) -> Any:
        status = self.asked.note("SetVariables", payload)
        results = [
            {"attribute_status": status, "component": i["component"], "variable": i["variable"]}
            for i in payload["set_variable_data"]
        ]
        return result201.SetVariables(set_variable_result=results)

    @on("SetChargingProfile")
    def set_profile(self, **payload: Any) -> Any:
        return result201.SetChargingProfile(status=self.asked.note("SetChargingProfile", payload))

    @on("ClearChargingProfile")
    def clear_profile(self, **payload: Any) -> Any:
        return result201.ClearChargingProfile(
            status=self.asked.note("ClearChargingProfile", payload)
        )

    @on("UpdateFirmware")
    def update_firmware(self, **payload: Any) -> Any:
        return result201.UpdateFirmware(status=self.asked.note("UpdateFirmware", payload))

    @on("PublishFirmware")
    def publish_firmware(self, **payload: Any) -> Any:
        return result201.PublishFirmware(status=self.asked.note("PublishFirmware", payload))

    @on("TriggerMessage")
    def trigger(self, **payload: Any) -> Any:
        return result201.TriggerMessage(status=self.asked.note("TriggerMessage", payload))

    @on("DataTransfer")
    def data_transfer(self, **payload: Any) -> Any:
        return result201.DataTransfer(status=self.asked.note("DataTransfer", payload), data="pong")

    @on("CertificateSigned")
    def certificate_signed(self, **payload: Any) -> Any:
        return result201.CertificateSigned(status=self.asked.note("CertificateSigned", payload))


SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


@contextlib.asynccontextmanager
async def connected(
    url: str,
    charger_id: str,
    version: str = "1.6",
    *,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[Any]:
    """A charge point of ``version`` connected to ``url``/``charger_id``, serving its calls."""
    offered = subprotocols if subprotocols is not None else [SUBPROTOCOL[version]]
    async with websockets.connect(
        f"{url}/ocpp/{charger_id}",
        subprotocols=offered or None,  # type: ignore[arg-type]
        additional_headers=headers,
        ssl=ssl_context,
        open_timeout=TIMEOUT,
    ) as connection:
        kind = Charger201 if version == "2.0.1" else Charger16
        point = kind(charger_id, connection)
        serving = asyncio.create_task(point.start())
        try:
            yield point
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await serving
