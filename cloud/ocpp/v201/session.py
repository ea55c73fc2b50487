"""OCPP 2.0.1: ``Charger201``, the shared session (``cloud.ocpp.session``) with what 2.0.1 says
its own way: its call modules and error codes, TransactionEvent (the station numbers the
transactions), NotifyEvent, the log and firmware-publishing notices, and IdTokenInfo answers."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from cloud.ocpp.authorization import ACCEPTED, Verdict
from cloud.ocpp.connection import refusing
from cloud.ocpp.downlink import Outgoing
from cloud.ocpp.session import BridgedCharger
from cloud.ocpp.v201 import downlink
from cloud.ocpp.v201.uplink import VERSION, Uplink201
from firmware.core import contract


class Charger201(BridgedCharger):
    """An OCPP 2.0.1 charging station."""

    subprotocol = "ocpp2.0.1"  # OCPP-J 2.0.1 part 4 3.1.2
    _ocpp_version = VERSION
    _call = call
    _call_result = call_result
    _uplink_class = Uplink201
    _commands = downlink.COMMANDS
    _known_actions = frozenset(a.value for a in Action)
    _unreadable = "RpcFrameworkError"  # OCPP-J 2.0.1 part 4 4.2.3
    uplink: Uplink201

    def _token_info(self, verdict: Verdict) -> dict[str, Any]:
        """IdTokenInfoType."""
        return downlink.id_token_info(verdict)

    def _authorized(self, info: dict[str, Any]) -> Any:
        """AuthorizeResponse (C01)."""
        return call_result.Authorize(id_token_info=info)

    def _list_version_call(self) -> Outgoing:
        """GetLocalListVersionRequest (D02)."""
        return downlink.get_local_list_version_call()

    def _send_list_call(self, auth_list: contract.AuthList) -> tuple[Outgoing, int]:
        """SendLocalListRequest (D01)."""
        return downlink.send_local_list_call(auth_list)

    @on("TransactionEvent")
    async def on_transaction_event(self, **payload: Any) -> Any:
        """TransactionEvent (E01-E09): the session's events, and the token's verdict."""
        with refusing():
            self.publish(self.uplink.transaction_event(payload))
            token = self.uplink.token_of(payload)
        if token is not None:
            verdict = await self._verdict(token)
            return call_result.TransactionEvent(id_token_info=downlink.id_token_info(verdict))
        if payload.get("id_token"):  # NoAuthorization: nothing to judge
            return call_result.TransactionEvent(id_token_info={"status": ACCEPTED})
        return call_result.TransactionEvent()

    @on("NotifyEvent")
    def on_notify_event(self, **payload: Any) -> Any:
        """NotifyEvent (N07, N08): one event per EventData."""
        with refusing():
            self.publish(self.uplink.notify_event(payload))
        return call_result.NotifyEvent()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **payload: Any) -> Any:
        """LogStatusNotification (N01): an event."""
        with refusing():
            self.publish(self.uplink.notice("log.status", payload))
        return call_result.LogStatusNotification()

    @on("PublishFirmwareStatusNotification")
    def on_publish_firmware_status_notification(self, **payload: Any) -> Any:
        """PublishFirmwareStatusNotification (L03): an event."""
        with refusing():
            self.publish(self.uplink.notice("firmware.publish_status", payload))
        return call_result.PublishFirmwareStatusNotification()
