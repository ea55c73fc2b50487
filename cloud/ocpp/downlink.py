"""From the contract to the charger: a command (docs/device-contract.md 4.5) as the OCPP call
of the charger's version, and the call's answer as the command's result (4.6). I/O-free.

This is the shared core: the command names the bridge knows (``COMMANDS``), how answers are
read (``by_status``), the argument checks and what every version's builders share. Each
version module (``cloud.ocpp.v16.downlink``, ``cloud.ocpp.v201.downlink``) holds its builders
in a table ``{command name: Translate}`` that ``to_call`` looks the command up in.

``to_call`` raises ``UnsupportedCommandError`` for what the charger cannot be asked (an
unknown name, bad args, a 2.0.1-only call to a 1.6 charger); the session answers those
``rejected`` without calling. Transaction ids, EVSE/connector and enum names are the bridge's
normalised forms (see ``uplink``) turned back into each version's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict

from cloud.ocpp import UnsupportedCommandError
from cloud.ocpp.uplink import Uplink
from firmware.core import contract
from parameters import Binding, Family

# The id token of starts the cloud asks for without naming one (RemoteStartTransaction needs
# one; 1.6 IdToken is CiString20).
REMOTE_ID_TAG = "ampfleet-remote"
# Answers that mean done (the rest: refused, or failed where the status says so).
DONE = frozenset({"Accepted", "Scheduled", "RebootRequired", "Unlocked", "AcceptedCanceled"})
_FAILED = frozenset({"UnlockFailed", "Failed"})
# The contract commands (4.5) the bridge translates for some OCPP version; a version's table
# holds those it can carry. A name outside it is ``unknown_command``, one inside it that the
# charger's version lacks is "not supported by OCPP <version>".
COMMANDS = frozenset(
    {
        "reboot",
        "charging.start",
        "charging.stop",
        "connector.unlock",
        "config.get",
        "config.set",
        "charging_profile.set",
        "charging_profile.clear",
        "firmware.update",
        "firmware.publish",
        "trigger",
        "data_transfer",
        "certificate.signed",
    }
)


@dataclasses.dataclass(frozen=True)
class Answer:
    """A command result (contract 4.6): ``ok``, ``rejected`` or ``error``."""

    status: str
    result: dict[str, Any] | None = None
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """An OCPP call to make and how to read its answer."""

    payload: Any  # an ocpp.v16.call / ocpp.v201.call dataclass
    read: Callable[[Any], Answer]

    @property
    def action(self) -> str:
        """The OCPP action (the payload's class name, as the ocpp library sends it)."""
        return type(self.payload).__name__


# A version's builder: the command's args, the charger's session, its family -> the call.
Translate = Callable[[Mapping[str, Any], Uplink, Family | None], Outgoing]


def plain(response: Any) -> dict[str, Any]:
    """A call_result dataclass as a JSON-able dict (snake_case, no empty fields)."""
    data = remove_nones(serialize_as_dict(response)) if response is not None else {}
    return {k: v for k, v in data.items() if k != "custom_data"}


def by_status(response: Any) -> Answer:
    """The usual reading: the answer's ``status`` says ok, refused or failed."""
    data = plain(response)
    status = str(data.get("status", "Accepted"))
    if status in DONE:
        return Answer("ok", data)
    reason = status
    info = data.get("status_info") or {}
    if info.get("reason_code"):
        reason = f"{status}: {info['reason_code']}"
    return Answer("error" if status in _FAILED else "rejected", data, reason)


def int_arg(args: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    """An integer argument of a command (``bad_args`` when it is not one)."""
    value = args.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UnsupportedCommandError(f"bad_args: {key} must be an integer")
    return value


def str_arg(args: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    """A string argument of a command (``bad_args`` when it is not one, or missing)."""
    value = args.get(key)
    if value is None and required:
        raise UnsupportedCommandError(f"bad_args: {key} is required")
    if value is not None and not isinstance(value, str):
        raise UnsupportedCommandError(f"bad_args: {key} must be a string")
    return value


def ocpp_binding(family: Family | None, key: str) -> Binding | None:
    """The ``ocpp`` binding of the family's parameter ``key``, if it has one."""
    if family is None:
        return None
    try:
        binding = family.parameter(key).binding
    except KeyError:
        return None
    return binding if binding.kind == "ocpp" else None


def ocpp_setting(family: Family | None, key: str) -> Family | None:
    """The family, when ``key`` is one of its OCPP-bound settings (else None)."""
    if family is None:
        return None
    try:
        parameter = family.parameter(key)
    except KeyError:
        return None
    if parameter.kind != "setting" or parameter.binding.kind != "ocpp":
        return None
    return family


def config_text(value: Any) -> str:
    """A configuration value as OCPP carries it (a string): booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def remote_start_token(args: Mapping[str, Any]) -> str:
    """The id token a ``charging.start`` starts with: the cloud's (``app-...``) or ours."""
    return str_arg(args, "id_tag") or REMOTE_ID_TAG


def transaction_of(args: Mapping[str, Any], uplink: Uplink) -> str:
    """The transaction a ``charging.stop`` names, or the one running on its connector."""
    named = str_arg(args, "transaction_id")
    if named is not None:
        return named
    connector = int_arg(args, "connector")
    if connector is None:
        raise UnsupportedCommandError("bad_args: name the connector or the transaction_id")
    running = uplink.on_connector(connector)
    if running is None:
        raise UnsupportedCommandError(f"no transaction on connector {connector}")
    return running.id


def profile_schedule(args: Mapping[str, Any]) -> dict[str, Any]:
    """The ChargingSchedule of ``charging_profile.set``: one period from the start."""
    limit = args.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise UnsupportedCommandError("bad_args: limit must be a number")
    schedule: dict[str, Any] = {
        "charging_rate_unit": str_arg(args, "unit", required=True),
        # 1.6 7.9: one decimal place (the schema's multipleOf 0.1).
        "charging_schedule_period": [{"start_period": 0, "limit": round(float(limit), 1)}],
    }
    if args.get("duration") is not None:
        schedule["duration"] = int_arg(args, "duration")
    return schedule


def to_call(
    table: Mapping[str, Translate],
    version: str,
    command: contract.Command,
    uplink: Uplink,
    family: Family | None,
) -> Outgoing:
    """The call that carries ``command`` to a charger whose version's builders are ``table``."""
    translate = table.get(command.name)
    if translate is None:
        known = command.name in COMMANDS
        raise UnsupportedCommandError(
            f"not supported by OCPP {version}" if known else "unknown_command"
        )
    return translate(command.args, uplink, family)


def ota_call(table: Mapping[str, Translate], offer: contract.Ota, uplink: Uplink) -> Outgoing:
    """UpdateFirmware for a contract OTA offer (4.7): the image at ``offer.url``."""
    return table["firmware.update"]({"url": offer.url}, uplink, None)


def config_call(
    table: Mapping[str, Translate], parameter_id: str, value: Any, uplink: Uplink, family: Family
) -> Outgoing:
    """ChangeConfiguration / SetVariables for one desired setting (remote configuration)."""
    return table["config.set"]({"key": parameter_id, "value": value}, uplink, family)
