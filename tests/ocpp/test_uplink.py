"""Sessions as the contract's section 14 says, from the I/O-free translation (``uplink``) and
the token judge (``authorization``): every OCPP stop reason of both versions in the contract's
words, what a session the bridge did not see start reports, and the list's verdicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ocpp.v16.enums import Reason
from ocpp.v201.enums import ReasonEnumType

from cloud.ocpp.authorization import Authorizer
from cloud.ocpp.server import FamilyCache
from cloud.ocpp.uplink import DataTransferRules, Uplink, stop_reason
from cloud.ocpp.v16.uplink import VERSION as V16
from cloud.ocpp.v16.uplink import Uplink16
from cloud.ocpp.v201.uplink import VERSION as V201
from cloud.ocpp.v201.uplink import Uplink201
from firmware.core import contract

CONTRACT_REASONS = {
    "remote",
    "local",
    "ev_disconnected",
    "schedule_end",
    "fault",
    "power_loss",
    "deauthorized",
    "other",
}
NOW_S = 1_790_000_000.0


UPLINKS: dict[str, type[Uplink]] = {V16: Uplink16, V201: Uplink201}


def uplink(version: str) -> Any:
    _family, meters = FamilyCache().get("ocpp-generic")
    return UPLINKS[version]("cp-1", meters, DataTransferRules.parse(""), clock=lambda: NOW_S)


def data_of(published: list[Any], type_: str) -> dict[str, Any]:
    for message in published:
        body = json.loads(message.payload)
        if message.channel == contract.EVENTS and body["type"] == type_:
            found: dict[str, Any] = body["data"]
            return found
    raise AssertionError(f"no {type_} event")


@pytest.mark.parametrize(
    "ocpp_reason", sorted({r.value for r in Reason} | {r.value for r in ReasonEnumType})
)
def test_every_ocpp_stop_reason_has_a_contract_reason(ocpp_reason: str) -> None:
    assert stop_reason(ocpp_reason) in CONTRACT_REASONS


def test_the_stop_reasons_that_matter_to_sessions() -> None:
    assert stop_reason("EVDisconnected") == "ev_disconnected"  # E09
    assert stop_reason("DeAuthorized") == "deauthorized"
    assert stop_reason("Remote") == stop_reason("UnlockCommand") == "remote"
    assert stop_reason("PowerLoss") == stop_reason("Reboot") == "power_loss"
    assert stop_reason("GroundFault") == "fault"
    assert stop_reason("SomethingNew") == "other"


def test_a_16_session_reports_its_start_and_stop() -> None:
    translate = uplink(V16)
    number, published = translate.start_transaction(
        {
            "connector_id": 2,
            "id_tag": "CARD-1",
            "meter_start": 500,
            "timestamp": "2026-09-21T10:00:00Z",
        }
    )
    started = data_of(published, "charging.started")
    assert started["session"] == started["transaction_id"] == str(number)
    assert (started["connector"], started["id_tag"], started["meter_start_wh"]) == (
        2,
        "CARD-1",
        500.0,
    )
    stopped = data_of(
        translate.stop_transaction(
            {
                "transaction_id": number,
                "meter_stop": 2_500,
                "timestamp": "2026-09-21T10:30:05Z",
                "id_tag": "CARD-2",  # another card stopped it
            }
        ),
        "charging.stopped",
    )
    assert stopped == {
        "session": str(number),
        "transaction_id": str(number),
        "connector": 2,
        "id_tag": "CARD-1",
        "stop_id_tag": "CARD-2",
        "meter_start_wh": 500.0,
        "meter_stop_wh": 2_500.0,
        "energy_wh": 2_000.0,
        "duration_s": 1_805,
        "reason": "local",  # 1.6 7.39: no reason is Local
        "ocpp_reason": "Local",
    }


def test_a_session_the_bridge_did_not_see_start_reports_what_it_knows() -> None:
    stopped = data_of(
        uplink(V16).stop_transaction(
            {
                "transaction_id": 77,
                "meter_stop": 9_000,
                "timestamp": "2026-09-21T10:30:00Z",
                "reason": "PowerLoss",
            }
        ),
        "charging.stopped",
    )
    assert stopped == {
        "session": "77",
        "transaction_id": "77",
        "meter_stop_wh": 9_000.0,
        "reason": "power_loss",
        "ocpp_reason": "PowerLoss",
    }
    ended = data_of(
        uplink(V201).transaction_event(
            {
                "event_type": "Ended",
                "timestamp": "2026-09-21T10:30:00Z",
                "trigger_reason": "StopAuthorized",
                "seq_no": 9,
                "transaction_info": {"transaction_id": "tx-9", "stopped_reason": "DeAuthorized"},
                "id_token": {"id_token": "", "type": "ISO14443"},  # an empty token: left out
            }
        ),
        "charging.stopped",
    )
    assert ended == {
        "session": "tx-9",
        "transaction_id": "tx-9",
        "connector": 1,
        "reason": "deauthorized",
        "ocpp_reason": "DeAuthorized",
        "trigger": "StopAuthorized",
    }


def test_a_201_start_without_authorization_has_no_id_tag() -> None:
    started = data_of(
        uplink(V201).transaction_event(
            {
                "event_type": "Started",
                "timestamp": "2026-09-21T10:00:00Z",
                "trigger_reason": "CablePluggedIn",
                "seq_no": 0,
                "transaction_info": {"transaction_id": "tx-1"},
                "evse": {"id": 1, "connector_id": 1},
                "id_token": {"id_token": "", "type": "NoAuthorization"},
            }
        ),
        "charging.started",
    )
    assert "id_tag" not in started and started["session"] == "tx-1"


def _transaction_event(kind: str, seq: int, minute: int, wh: float | None) -> dict[str, Any]:
    at = f"2026-09-21T10:{minute:02d}:00Z"
    payload: dict[str, Any] = {
        "event_type": kind,
        "timestamp": at,
        "trigger_reason": "CablePluggedIn",
        "seq_no": seq,
        "transaction_info": {"transaction_id": "tx-13"},
        "evse": {"id": 1, "connector_id": 1},
    }
    if wh is not None:
        payload["meter_value"] = [{"timestamp": at, "sampled_value": [{"value": wh}]}]
    return payload


def _types(published: list[Any]) -> list[str]:
    return [json.loads(m.payload)["type"] for m in published if m.channel == contract.EVENTS]


def test_a_201_start_without_a_meter_value_takes_the_first_one() -> None:
    # Issue 13: Started without a meter value (E01-E02), Updated 2,500 Wh, Ended 4,000 Wh.
    translate = uplink(V201)
    started = data_of(
        translate.transaction_event(_transaction_event("Started", 0, 0, None)), "charging.started"
    )
    assert "meter_start_wh" not in started
    updated = translate.transaction_event(_transaction_event("Updated", 1, 10, 2_500))
    assert data_of(updated, "charging.meter_start") == {
        "session": "tx-13",
        "transaction_id": "tx-13",
        "connector": 1,
        "evse": 1,
        "meter_start_wh": 2_500.0,
    }
    [sample] = [m for m in updated if m.channel == contract.TELEMETRY]
    assert json.loads(sample.payload)["values"]["session_energy_wh"] == 0.0
    # Only the first value is the start: the next ones report no start again.
    later = translate.transaction_event(_transaction_event("Updated", 2, 20, 3_000))
    assert "charging.meter_start" not in _types(later)
    ended = translate.transaction_event(_transaction_event("Ended", 3, 30, 4_000))
    stopped = data_of(ended, "charging.stopped")
    assert (stopped["meter_start_wh"], stopped["meter_stop_wh"], stopped["energy_wh"]) == (
        2_500.0,
        4_000.0,
        1_500.0,
    )


def test_a_start_with_a_meter_value_or_unseen_is_not_replaced_by_a_later_one() -> None:
    # A meter value in the Started event is the start (E01); no charging.meter_start follows.
    translate = uplink(V201)
    translate.transaction_event(_transaction_event("Started", 0, 0, 1_000))
    assert "charging.meter_start" not in _types(
        translate.transaction_event(_transaction_event("Updated", 1, 10, 2_500))
    )
    # 1.6: StartTransaction always carries meterStart.
    translate16 = uplink(V16)
    number, _ = translate16.start_transaction(
        {
            "connector_id": 1,
            "id_tag": "C",
            "meter_start": 1_000,
            "timestamp": "2026-09-21T10:00:00Z",
        }
    )
    meter = {"timestamp": "2026-09-21T10:10:00Z", "sampled_value": [{"value": "2500"}]}
    published = translate16.meter_values(
        {"connector_id": 1, "transaction_id": number, "meter_value": [meter]}
    )
    assert "charging.meter_start" not in _types(published)
    # A transaction the bridge did not see start (the charger reconnected): its first value
    # here is not the transaction's first, so the bridge says nothing of the start; the
    # cloud's record holds the one reported before.
    unseen = uplink(V201)
    assert "charging.meter_start" not in _types(
        unseen.transaction_event(_transaction_event("Updated", 2, 20, 3_000))
    )
    stopped = data_of(
        unseen.transaction_event(_transaction_event("Ended", 3, 30, 4_000)), "charging.stopped"
    )
    assert "meter_start_wh" not in stopped and "energy_wh" not in stopped


def test_the_list_judges_tokens() -> None:
    judge = Authorizer()
    assert judge.verdict("CARD-A", 1_000).status == "Invalid"  # no list: nothing is on it
    judge.update(
        contract.decode_auth_list(
            contract.encode_auth_list(5, {"04ab": None, "GUEST": 2_000, "guest": 3_000})
        )
    )
    assert judge.verdict("04AB", 1_000).status == "Accepted"  # OCPP tokens: case-insensitive
    assert judge.verdict("Guest", 2_999).until == 3_000  # two spellings: the longer validity
    assert judge.verdict("GUEST", 3_000).status == "Expired"  # until is exclusive
    assert judge.verdict("GUEST", 3_000).refusal == "expired"
    assert judge.verdict("OTHER", 1_000).refusal == "unknown"
    judge.remember_remote("app-abcdefabcdef")
    assert judge.verdict("APP-ABCDEFABCDEF", 1_000).status == "Accepted"


@pytest.mark.parametrize(
    ("on_charger", "version", "tokens", "in_sync"),
    [
        (None, 5, {"A": None}, False),  # not asked yet
        (5, 5, {"A": None}, True),
        (4, 5, {"A": None}, False),
        (0, 0, {}, True),  # OCPP 0: no list, which an empty list of version 0 is
        (0, 0, {"A": None}, False),
    ],
)
def test_the_charger_is_in_step_when_it_holds_the_lists_version(
    on_charger: int | None, version: int, tokens: dict[str, int | None], in_sync: bool
) -> None:
    judge = Authorizer()
    judge.update(contract.decode_auth_list(contract.encode_auth_list(version, tokens)))
    judge.on_charger = on_charger
    assert judge.in_sync() is in_sync
