"""Stop reasons from OCPP chargers onto the cloud's record words: the bridge translates OCPP's
words (1.6 7.39 Reason, 2.0.1 ReasonEnumType) into the contract's (section 14) and passes its
own on as ``ocpp_reason``; the charging domain records what the contract says. Moved here from
tests/charging/test_reasons.py when the cloud stopped knowing OCPP's table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ocpp.v16.enums import Reason

from cloud.charging import reasons
from cloud.ocpp.server import FamilyCache
from cloud.ocpp.uplink import DataTransferRules
from cloud.ocpp.v16.uplink import Uplink16
from cloud.ocpp.v201.uplink import Uplink201
from firmware.core import contract

# OCPP 1.6 (7.39 Reason) and 2.0.1 (ReasonEnumType), spelt as the specifications spell them.
OCPP = {
    "EmergencyStop": "fault",
    "EVDisconnected": "ev_disconnected",
    "HardReset": "power_loss",
    "Local": "local",
    "Other": "other",
    "PowerLoss": "power_loss",
    "Reboot": "power_loss",
    "Remote": "remote",
    "SoftReset": "power_loss",
    "UnlockCommand": "remote",
    "DeAuthorized": "card_refused",
    "EnergyLimitReached": "other",
    "GroundFault": "fault",
    "ImmediateReset": "power_loss",
    "LocalOutOfCredit": "local",
    "MasterPass": "local",
    "OvercurrentFault": "fault",
    "PowerQuality": "fault",
    "SOCLimitReached": "other",
    "StoppedByEV": "ev_disconnected",
    "TimeLimitReached": "schedule_end",
    "Timeout": "other",
}
V16_REASONS = frozenset(r.value for r in Reason)


def stopped_data(ocpp_reason: str) -> dict[str, Any]:
    """The bridge's ``charging.stopped`` data for a session an OCPP charger ended with
    ``ocpp_reason``: a 1.6 StopTransaction when 1.6 has the word, else a 2.0.1 TransactionEvent."""
    _family, meters = FamilyCache().get("ocpp-generic")
    if ocpp_reason in V16_REASONS:
        published = Uplink16("cp-1", meters, DataTransferRules.parse("")).stop_transaction(
            {
                "transaction_id": 7,
                "meter_stop": 1_000,
                "timestamp": "2026-09-21T10:30:00Z",
                "reason": ocpp_reason,
            }
        )
    else:
        published = Uplink201("cp-1", meters, DataTransferRules.parse("")).transaction_event(
            {
                "event_type": "Ended",
                "timestamp": "2026-09-21T10:30:00Z",
                "trigger_reason": "StopAuthorized",
                "seq_no": 3,
                "transaction_info": {"transaction_id": "tx-7", "stopped_reason": ocpp_reason},
            }
        )
    for message in published:
        body = json.loads(message.payload)
        if message.channel == contract.EVENTS and body["type"] == "charging.stopped":
            data: dict[str, Any] = body["data"]
            return data
    raise AssertionError("no charging.stopped event")


@pytest.mark.parametrize(("said", "recorded"), sorted(OCPP.items()))
def test_every_ocpp_reason_has_its_record_word(said: str, recorded: str) -> None:
    data = stopped_data(said)
    assert data["ocpp_reason"] == said
    assert reasons.stop_reason(data["reason"], data["ocpp_reason"]) == recorded
    assert recorded in reasons.STOP_REASONS


def test_the_bridge_fills_in_what_the_contract_does_not_spell() -> None:
    # Was reasons.stop_reason("something-new", "Reboot") through charging: the OCPP word is
    # now the bridge's to translate, and the cloud records the contract word it sends.
    data = stopped_data("Reboot")
    assert reasons.stop_reason(data["reason"], data["ocpp_reason"]) == "power_loss"
