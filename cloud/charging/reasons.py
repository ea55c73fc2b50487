"""Why a session stopped: the charger's words (docs/device-contract.md 14, OCPP 1.6 ``Reason``,
OCPP 2.0.1 ``ReasonEnumType``) mapped onto the cloud's record vocabulary.

The cloud keeps two things: ``stop_reason``, one of :data:`STOP_REASONS` (what reports group
by), and ``charger_reason``, the reason exactly as the charger gave it (the OCPP one when the
bridge passed it on as ``ocpp_reason``), so that nothing the charger said is lost.
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

# Keys are normalised (lower case, no "_", "-" or spaces), so "EVDisconnected" (OCPP) and
# "ev_disconnected" (contract 14) are one key.
_BY_KEY: dict[str, str] = {
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
    # OCPP 1.6 (7.39 Reason) and 2.0.1 (ReasonEnumType), where they differ from the above
    "unlockcommand": REMOTE,  # UnlockConnector from the central system ends the transaction
    "masterpass": LOCAL,  # 2.0.1: a master card stopped it at the charger
    "localoutofcredit": LOCAL,
    "stoppedbyev": EV_DISCONNECTED,  # 2.0.1: the EV side ended it
    "timelimitreached": SCHEDULE_END,  # 2.0.1: a charging profile's time limit
    "emergencystop": FAULT,
    "groundfault": FAULT,
    "overcurrentfault": FAULT,
    "powerquality": FAULT,
    "reboot": POWER_LOSS,
    "hardreset": POWER_LOSS,
    "softreset": POWER_LOSS,
    "immediatereset": POWER_LOSS,
    # EnergyLimitReached, SOCLimitReached, Timeout and anything new fall to ``other``.
}


def _key(reason: str) -> str:
    return "".join(c for c in reason.lower() if c not in "_- ")


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
