"""Stop reasons: what chargers say (contract 14) onto the record's words. OCPP's words reach
the cloud through the bridge's translation: tests/ocpp/test_stop_reasons.py."""

from __future__ import annotations

import pytest

from cloud.charging import reasons

# Every word of docs/device-contract.md section 14.
CONTRACT = {
    "remote": "remote",
    "local": "local",
    "ev_disconnected": "ev_disconnected",
    "schedule_end": "schedule_end",
    "fault": "fault",
    "power_loss": "power_loss",
    "deauthorized": "card_refused",
    "other": "other",
}


@pytest.mark.parametrize(("said", "recorded"), sorted(CONTRACT.items()))
def test_every_contract_reason_has_its_record_word(said: str, recorded: str) -> None:
    assert reasons.stop_reason(said) == recorded
    assert recorded in reasons.STOP_REASONS


def test_the_record_vocabulary_is_the_briefs() -> None:
    assert set(reasons.STOP_REASONS) == {
        "remote",
        "local",
        "ev_disconnected",
        "schedule_end",
        "fault",
        "power_loss",
        "card_refused",
        "other",
    }


@pytest.mark.parametrize("said", ["EVDISCONNECTED", "evdisconnected", "EV-Disconnected"])
def test_case_and_separators_do_not_matter(said: str) -> None:
    assert reasons.stop_reason(said) == "ev_disconnected"


@pytest.mark.parametrize("said", [None, "", "stopped", "CableCut", "x" * 300])
def test_unknown_or_missing_reasons_are_other(said: str | None) -> None:
    assert reasons.stop_reason(said) == "other"


def test_the_contract_reason_wins_and_the_ocpp_one_fills_in() -> None:
    # The bridge sends the normalised reason and the OCPP one; either alone is enough (an OCPP
    # word the contract does not spell is the bridge's to translate: tests/ocpp).
    assert reasons.stop_reason("ev_disconnected", "EVDisconnected") == "ev_disconnected"
    assert reasons.stop_reason(None, "PowerLoss") == "power_loss"
    assert reasons.stop_reason("remote", "Other") == "remote"


def test_the_charger_reason_keeps_the_most_specific_word_the_charger_used() -> None:
    assert reasons.charger_reason("fault", "GroundFault") == "GroundFault"
    assert reasons.charger_reason("local") == "local"
    assert reasons.charger_reason(None) is None
    assert reasons.charger_reason("x" * 300) == "x" * reasons.MAX_CHARGER_REASON
