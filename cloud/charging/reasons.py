"""Why a session stopped: the contract's ``reason`` words (docs/device-contract.md 14) mapped
onto the cloud's record vocabulary.

The cloud keeps two things: ``stop_reason``, one of :data:`STOP_REASONS` (what reports group
by), and ``charger_reason``, the reason exactly as the charger gave it (the bridge's
``ocpp_reason`` when it passed one on), so that nothing the charger said is lost. Only the
contract is known here: chargers that speak another protocol (OCPP) are translated into the
contract's words by their bridge (``cloud.ocpp``), which sends its own word as ``ocpp_reason``.
"""

from __future__ import annotations

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


def known(reason: str | None) -> bool:
    """True when ``reason`` (a contract word, any case or separators) maps onto the vocabulary."""
    return reason is not None and _key(reason) in _CONTRACT


def stop_reason(reason: str | None, ocpp_reason: str | None = None) -> str:
    """The cloud's ``stop_reason`` for what the charger said: its contract ``reason`` when
    known, else its other word when that one spells a contract word, else ``other``."""
    for said in (reason, ocpp_reason):
        if said is not None and known(said):
            return _CONTRACT[_key(said)]
    return OTHER


def charger_reason(reason: str | None, ocpp_reason: str | None = None) -> str | None:
    """What to keep as ``charger_reason``: the OCPP reason when there is one (the most
    specific word the charger used), else the contract reason; cut to the column's size."""
    said = ocpp_reason or reason
    return said[:MAX_CHARGER_REASON] if said else None
