"""Why a session stopped: the charger's words (docs/device-contract.md 14, OCPP 1.6 ``Reason``,
OCPP 2.0.1 ``ReasonEnumType``) mapped onto the cloud's record vocabulary.

The cloud keeps two things: ``stop_reason``, one of :data:`STOP_REASONS` (what reports group
by), and ``charger_reason``, the reason exactly as the charger gave it (the OCPP one when the
bridge passed it on as ``ocpp_reason``), so that nothing the charger said is lost.
"""

from __future__ import annotations

from cloud.ocpp.uplink import STOP_REASONS as OCPP_STOP_REASONS

REMOTE = "remote"
LOCAL = "local"
EV_DISCONNECTED = "ev_disconnected"
SCHEDULE_END = "schedule_end"
FAULT = "fault"
POWER_LOSS = "power_loss"
CARD_REFUSED = "card_refused"
OTHER = "other"

STOP_REASONS = (
    REMOTE,
    LOCAL,
    EV_DISCONNECTED,
    SCHEDULE_END,
    FAULT,
    POWER_LOSS,
    CARD_REFUSED,
    OTHER,
)

MAX_CHARGER_REASON = 64  # ChargingSession.charger_reason


def _key(reason: str) -> str:
    """Lower case, without "_", "-" or spaces: "ev_disconnected" and "EV-Disconnected" match."""
    return "".join(c for c in reason.lower() if c not in "_- ")


_CONTRACT: dict[str, str] = {
    # contract 14 (native firmware, and the bridge's normalised ``reason``)
    "remote": REMOTE,
    "local": LOCAL,
    "evdisconnected": EV_DISCONNECTED,
    "scheduleend": SCHEDULE_END,
    "fault": FAULT,
    "powerloss": POWER_LOSS,
    "deauthorized": CARD_REFUSED,  # the contract's word for the cloud's card_refused
    "cardrefused": CARD_REFUSED,
    "other": OTHER,
}
# OCPP reasons (an ``ocpp_reason`` alone) go through the bridge's own translation into the
# contract's words: one table for the protocol, kept where the protocol is translated.
_BY_KEY: dict[str, str] = {
    **{_key(ocpp): _CONTRACT[_key(word)] for ocpp, word in OCPP_STOP_REASONS.items()},
    **_CONTRACT,
}


def known(reason: str | None) -> bool:
    """True when ``reason`` (a contract or OCPP name, any case) maps onto the vocabulary."""
    return reason is not None and _key(reason) in _BY_KEY


def stop_reason(reason: str | None, ocpp_reason: str | None = None) -> str:
    """The cloud's ``stop_reason`` for what the charger said: its contract ``reason`` when
    known, else its OCPP reason, else ``other``."""
    for said in (reason, ocpp_reason):
        if said is not None and known(said):
            return _BY_KEY[_key(said)]
    return OTHER


def charger_reason(reason: str | None, ocpp_reason: str | None = None) -> str | None:
    """What to keep as ``charger_reason``: the OCPP reason when there is one (the most
    specific word the charger used), else the contract reason; cut to the column's size."""
    said = ocpp_reason or reason
    return said[:MAX_CHARGER_REASON] if said else None
