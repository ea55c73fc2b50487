"""OCPP 2.0.1 downlink: contract commands (docs/device-contract.md 4.5) as 2.0.1 calls, and
the calls that keep the local authorization list on the station (D01, D02). I/O-free.

``COMMANDS`` is this version's table for the shared ``cloud.ocpp.downlink.to_call``.
Configuration is the device model's: a key is ``Component.Variable`` (or a parameter of the
family bound to one), read with GetVariables and set with SetVariables.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from ocpp.v201 import call

from cloud.ocpp import UnsupportedCommandError
from cloud.ocpp.authorization import ACCEPTED, Verdict, token_info
from cloud.ocpp.downlink import (
    DONE,
    Answer,
    Outgoing,
    Translate,
    by_status,
    config_text,
    int_arg,
    ocpp_binding,
    plain,
    profile_schedule,
    remote_start_token,
    str_arg,
    transaction_of,
)
from cloud.ocpp.meter import format_time
from cloud.ocpp.uplink import Uplink
from firmware.core import contract
from parameters import Family

EXPIRY = "cache_expiry_date_time"  # IdTokenInfoType
MAX_TOKEN = 36  # IdTokenType.idToken is identifierString[36]
# IdTokenEnumType of the cards on the list (RFID cards, contract 4.9).
CARD_ID_TYPE = "ISO14443"
# 1.6's purpose name, as the cloud spells it, in 2.0.1 (ChargingProfilePurposeEnumType).
_PURPOSE = {"ChargePointMaxProfile": "ChargingStationMaxProfile"}
_request_ids = itertools.count(1)


def config_variable(family: Family | None, key: str) -> tuple[str, str]:
    """The (component, variable) ``key`` names: a parameter id of the family (by its ``ocpp``
    binding's ``component``/``variable``), else ``Component.Variable``."""
    binding = ocpp_binding(family, key)
    if binding is not None:
        if isinstance(binding.get("component"), str):
            return str(binding.get("component")), str(binding.get("variable"))
        raise UnsupportedCommandError(f"bad_args: {key} has no OCPP 2.0.1 binding")
    component, dot, variable = key.partition(".")
    if not dot or not component or not variable:
        raise UnsupportedCommandError("bad_args: 2.0.1 keys are Component.Variable")
    return component, variable


def _reset(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    mode = "Immediate" if args.get("mode") == "hard" else "OnIdle"
    return Outgoing(call.Reset(type=mode), by_status)


def _start(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    tag = remote_start_token(args)
    payload = call.RequestStartTransaction(
        id_token={"id_token": tag, "type": "Central"},
        remote_start_id=next(_request_ids),
        evse_id=int_arg(args, "connector"),
    )
    return Outgoing(payload, by_status)


def _stop(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    payload = call.RequestStopTransaction(transaction_id=transaction_of(args, uplink))
    return Outgoing(payload, by_status)


def _unlock(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    connector = int_arg(args, "connector")
    return Outgoing(call.UnlockConnector(evse_id=connector, connector_id=1), by_status)


def _read_variables(response: Any) -> Answer:
    values: dict[str, Any] = {}
    unknown = []
    for item in plain(response).get("get_variable_result", []):
        name = f"{item['component']['name']}.{item['variable']['name']}"
        if item.get("attribute_status") == "Accepted":
            values[name] = item.get("attribute_value")
        else:
            unknown.append(name)
    return Answer("ok", {"values": values, "unknown": unknown})


def _get(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = str_arg(args, "key")
    if key is None:
        if family is None:
            raise UnsupportedCommandError("bad_args: name the key (2.0.1 reads variables)")
        targets = []
        for parameter in family.parameters:
            if parameter.binding.kind == "ocpp" and parameter.binding.get("component"):
                targets.append(config_variable(family, parameter.id))
    else:
        targets = [config_variable(family, key)]
    data = [{"component": {"name": c}, "variable": {"name": v}} for c, v in targets]
    return Outgoing(call.GetVariables(get_variable_data=data), _read_variables)


def _read_set(response: Any) -> Answer:
    results = plain(response).get("set_variable_result", [])
    first = results[0] if results else {}
    status = first.get("attribute_status", "Rejected")
    data = {"status": status}
    if status in DONE:
        return Answer("ok", data)
    return Answer("rejected", data, status)


def _set(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    component, variable = config_variable(family, str_arg(args, "key", required=True) or "")
    item = {
        "attribute_value": config_text(args.get("value")),
        "component": {"name": component},
        "variable": {"name": variable},
    }
    return Outgoing(call.SetVariables(set_variable_data=[item]), _read_set)


def _set_profile(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    evse = int_arg(args, "connector") or 0
    purpose = str_arg(args, "purpose") or ("TxDefaultProfile" if evse else "ChargePointMaxProfile")
    schedule = {"id": 1, **profile_schedule(args)}
    profile: dict[str, Any] = {
        "id": int_arg(args, "profile_id", 1),
        "stack_level": int_arg(args, "stack_level", 0),
        "charging_profile_purpose": _PURPOSE.get(purpose, purpose),
        "charging_profile_kind": "Relative",
        "charging_schedule": [schedule],
    }
    if purpose == "TxProfile":
        running = uplink.on_connector(evse)
        if running is None:
            raise UnsupportedCommandError(f"no transaction on EVSE {evse}")
        profile["transaction_id"] = running.id
    return Outgoing(call.SetChargingProfile(evse_id=evse, charging_profile=profile), by_status)


def _clear_profile(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    criteria: dict[str, Any] = {}
    if args.get("connector") is not None:
        criteria["evse_id"] = int_arg(args, "connector")
    if args.get("purpose") is not None:
        purpose = str_arg(args, "purpose") or ""
        criteria["charging_profile_purpose"] = _PURPOSE.get(purpose, purpose)
    payload = call.ClearChargingProfile(
        charging_profile_id=int_arg(args, "profile_id"), charging_profile_criteria=criteria or None
    )
    return Outgoing(payload, by_status)


def _update(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    firmware = {
        "location": str_arg(args, "url", required=True),
        "retrieve_date_time": format_time(uplink.now_ms()),
    }
    payload = call.UpdateFirmware(request_id=next(_request_ids), firmware=firmware)
    return Outgoing(payload, by_status)


def _publish(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call.PublishFirmware(
        location=str_arg(args, "url", required=True) or "",
        checksum=str_arg(args, "md5", required=True) or "",
        request_id=next(_request_ids),
    )
    return Outgoing(payload, by_status)


def _trigger(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    connector = int_arg(args, "connector")
    evse = {"id": connector} if connector else None
    message = str_arg(args, "message", required=True)
    return Outgoing(call.TriggerMessage(requested_message=message, evse=evse), by_status)


def _transfer(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call.DataTransfer(
        vendor_id=str_arg(args, "vendor_id", required=True) or "",
        message_id=str_arg(args, "message_id"),
        data=args.get("data"),
    )
    return Outgoing(payload, by_status)


def _signed(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    chain = str_arg(args, "certificate_chain", required=True) or ""
    payload = call.CertificateSigned(
        certificate_chain=chain, certificate_type="ChargingStationCertificate"
    )
    return Outgoing(payload, by_status)


COMMANDS: dict[str, Translate] = {
    "reboot": _reset,
    "charging.start": _start,
    "charging.stop": _stop,
    "connector.unlock": _unlock,
    "config.get": _get,
    "config.set": _set,
    "charging_profile.set": _set_profile,
    "charging_profile.clear": _clear_profile,
    "firmware.update": _update,
    "firmware.publish": _publish,
    "trigger": _trigger,
    "data_transfer": _transfer,
    "certificate.signed": _signed,
}


# --- the local authorization list (D01, D02) --------------------------------------------------


def id_token_info(verdict: Verdict) -> dict[str, Any]:
    """The IdTokenInfo of an answer, in the library's snake_case."""
    return token_info(verdict, EXPIRY)


def _read_list_version(response: Any) -> Answer:
    return Answer("ok", {"version": plain(response).get("version_number")})


def get_local_list_version_call() -> Outgoing:
    """GetLocalListVersion (D02); the answer's result is ``{"version": N}``."""
    return Outgoing(call.GetLocalListVersion(), _read_list_version)


def send_local_list_call(auth_list: contract.AuthList) -> tuple[Outgoing, int]:
    """A Full SendLocalList of ``auth_list`` (D01), and how many tokens it carries: each
    Accepted, with its ``until`` as the expiry; a token longer than 36 characters is left out
    (the bridge still judges it itself)."""
    entries: list[dict[str, Any]] = []
    for token in sorted(auth_list.tokens):
        if len(token) > MAX_TOKEN:
            continue
        info = id_token_info(Verdict(ACCEPTED, auth_list.tokens[token]))
        entries.append(
            {"id_token": {"id_token": token, "type": CARD_ID_TYPE}, "id_token_info": info}
        )
    # The list has minItems 1; a Full update without one empties the station's.
    payload = call.SendLocalList(
        version_number=auth_list.version,
        update_type="Full",
        local_authorization_list=entries or None,
    )
    return Outgoing(payload, by_status), len(entries)
