"""OCPP 1.6J: ``Charger16``, the shared session (``cloud.ocpp.session``) with what 1.6 says its
own way: its call modules and error spellings, StartTransaction/StopTransaction (the bridge
numbers the transactions), DiagnosticsStatusNotification, and IdTagInfo answers."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from cloud.ocpp.authorization import Verdict
from cloud.ocpp.connection import refusing
from cloud.ocpp.downlink import Outgoing
from cloud.ocpp.session import BridgedCharger
from cloud.ocpp.v16 import downlink
from cloud.ocpp.v16.uplink import VERSION, Uplink16
from firmware.core import contract


class Charger16(BridgedCharger):
    """An OCPP 1.6J charger."""

    subprotocol = "ocpp1.6"  # OCPP-J 1.6 3.1.2
    _ocpp_version = VERSION
    _call = call
    _call_result = call_result
    _uplink_class = Uplink16
    _commands = downlink.COMMANDS
    _known_actions = frozenset(a.value for a in Action)
    # OCPP-J 1.6 4.2.3 spells these its own way (and has no RpcFrameworkError).
    _unreadable = "FormationViolation"
    _error_codes = {
        "FormatViolation": "FormationViolation",
        "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
        "RpcFrameworkError": "FormationViolation",
    }
    _no_list_version = downlink.NO_LIST
    uplink: Uplink16

    def _token_info(self, verdict: Verdict) -> dict[str, Any]:
        """IdTagInfo (1.6)."""
        return downlink.id_tag_info(verdict)

    def _authorized(self, info: dict[str, Any]) -> Any:
        """Authorize.conf (1.6 6.2)."""
        return call_result.Authorize(id_tag_info=info)

    def _list_version_call(self) -> Outgoing:
        """GetLocalListVersion.req (1.6 5.9)."""
        return downlink.get_local_list_version_call()

    def _send_list_call(self, auth_list: contract.AuthList) -> tuple[Outgoing, int]:
        """SendLocalList.req (1.6 5.15)."""
        return downlink.send_local_list_call(auth_list)

    @on("StartTransaction")
    async def on_start_transaction(self, **payload: Any) -> Any:
        """StartTransaction (1.6 4.8): the bridge's transaction id, and the token's verdict."""
        with refusing():
            number, published = self.uplink.start_transaction(payload)
        # A token not on the list is answered Invalid: the charger stops the transaction it
        # started (1.6 5.18); the cloud judges the session itself (contract 4.9).
        verdict = await self._verdict(str(payload["id_tag"]))
        self.publish(published)
        return call_result.StartTransaction(
            transaction_id=number, id_tag_info=downlink.id_tag_info(verdict)
        )

    @on("StopTransaction")
    async def on_stop_transaction(self, **payload: Any) -> Any:
        """StopTransaction (1.6 4.10): the session's end, and the stopping token's verdict."""
        with refusing():
            self.publish(self.uplink.stop_transaction(payload))
        if payload.get("id_tag"):
            verdict = await self._verdict(str(payload["id_tag"]))
            return call_result.StopTransaction(id_tag_info=downlink.id_tag_info(verdict))
        return call_result.StopTransaction()

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **payload: Any) -> Any:
        """DiagnosticsStatusNotification (1.6 4.4): an event."""
        with refusing():
            self.publish(self.uplink.notice("diagnostics.status", payload))
        return call_result.DiagnosticsStatusNotification()
