"""OCPP 1.6J downlink: contract commands (docs/device-contract.md 4.5) as 1.6 calls, and the
calls that keep the local authorization list on the charger (1.6 5.9, 5.15). I/O-free.

``COMMANDS`` is this version's table for the shared ``cloud.ocpp.downlink.to_call``; 1.6 has
no PublishFirmware, so ``firmware.publish`` is "not supported by OCPP 1.6".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ocpp.v16 import call

from cloud.ocpp import UnsupportedCommandError
from cloud.ocpp.authorization import ACCEPTED, Verdict, token_info
from cloud.ocpp.downlink import (
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

EXPIRY = "expiry_date"  # IdTagInfo.expiryDate
MAX_TOKEN = 20  # IdToken is CiString20Type
# GetLocalListVersion.conf (1.6 5.9): -1 is a charger that keeps no local list.
NO_LIST = -1


def config_key(family: Family | None, key: str) -> str:
    """The 1.6 configuration key ``key`` names: a parameter id of the family (by its ``ocpp``
    binding's ``key``), else the raw key."""
    binding = ocpp_binding(family, key)
    if binding is None:
        return key
    if isinstance(binding.get("key"), str):
        return str(binding.get("key"))
    raise UnsupportedCommandError(f"bad_args: {key} has no OCPP 1.6 binding")


def _reset(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    mode = "Hard" if args.get("mode") == "hard" else "Soft"
    return Outgoing(call.Reset(type=mode), by_status)


def _start(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    tag = remote_start_token(args)
    payload = call.RemoteStartTransaction(id_tag=tag, connector_id=int_arg(args, "connector"))
    return Outgoing(payload, by_status)


def _stop(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    transaction = transaction_of(args, uplink)
    if not transaction.isdigit():
        raise UnsupportedCommandError("bad_args: 1.6 transaction ids are integers")
    return Outgoing(call.RemoteStopTransaction(transaction_id=int(transaction)), by_status)


def _unlock(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    return Outgoing(call.UnlockConnector(connector_id=int_arg(args, "connector")), by_status)


def _read_configuration(response: Any) -> Answer:
    data = plain(response)
    values = {item["key"]: item.get("value") for item in data.get("configuration_key", [])}
    readonly = sorted(i["key"] for i in data.get("configuration_key", []) if i.get("readonly"))
    result = {"values": values, "readonly": readonly, "unknown": data.get("unknown_key", [])}
    return Answer("ok", result)


def _get(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = str_arg(args, "key")
    keys = None if key is None else [config_key(family, key)]
    return Outgoing(call.GetConfiguration(key=keys), _read_configuration)


def _set(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = config_key(family, str_arg(args, "key", required=True) or "")
    value = config_text(args.get("value"))
    return Outgoing(call.ChangeConfiguration(key=key, value=value), by_status)


def _set_profile(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    connector = int_arg(args, "connector") or 0
    purpose = str_arg(args, "purpose") or (
        "TxDefaultProfile" if connector else "ChargePointMaxProfile"
    )
    profile: dict[str, Any] = {
        "charging_profile_id": int_arg(args, "profile_id", 1),
        "stack_level": int_arg(args, "stack_level", 0),
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
        "charging_schedule": profile_schedule(args),
    }
    if purpose == "TxProfile":
        running = uplink.on_connector(connector)
        if running is None or not running.id.isdigit():
            raise UnsupportedCommandError(f"no transaction on connector {connector}")
        profile["transaction_id"] = int(running.id)
    payload = call.SetChargingProfile(connector_id=connector, cs_charging_profiles=profile)
    return Outgoing(payload, by_status)


def _clear_profile(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call.ClearChargingProfile(
        id=int_arg(args, "profile_id"),
        connector_id=int_arg(args, "connector"),
        charging_profile_purpose=str_arg(args, "purpose"),
    )
    return Outgoing(payload, by_status)


def _update(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    payload = call.UpdateFirmware(
        location=str_arg(args, "url", required=True) or "",
        retrieve_date=format_time(uplink.now_ms()),
    )
    return Outgoing(payload, lambda _r: Answer("ok", {}))  # 1.6 4.? answers nothing


def _trigger(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    message = str_arg(args, "message", required=True)
    payload = call.TriggerMessage(
        requested_message=message, connector_id=int_arg(args, "connector")
    )
    return Outgoing(payload, by_status)


def _transfer(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call.DataTransfer(
        vendor_id=str_arg(args, "vendor_id", required=True) or "",
        message_id=str_arg(args, "message_id"),
        data=str_arg(args, "data"),
    )
    return Outgoing(payload, by_status)


def _signed(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    chain = str_arg(args, "certificate_chain", required=True) or ""
    return Outgoing(call.CertificateSigned(certificate_chain=chain), by_status)


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
    "trigger": _trigger,
    "data_transfer": _transfer,
    "certificate.signed": _signed,
}


# --- the local authorization list (1.6 5.9, 5.15) -------------------------------------------


def id_tag_info(verdict: Verdict) -> dict[str, Any]:
    """The IdTagInfo of an answer, in the library's snake_case."""
    return token_info(verdict, EXPIRY)


def _read_list_version(response: Any) -> Answer:
    return Answer("ok", {"version": plain(response).get("list_version")})


def get_local_list_version_call() -> Outgoing:
    """GetLocalListVersion (1.6 5.9); the answer's result is ``{"version": N}``."""
    return Outgoing(call.GetLocalListVersion(), _read_list_version)


def send_local_list_call(auth_list: contract.AuthList) -> tuple[Outgoing, int]:
    """A Full SendLocalList of ``auth_list`` (1.6 5.15), and how many tokens it carries: each
    Accepted, with its ``until`` as the expiry; a token longer than 20 characters is left out
    (the bridge still judges it itself)."""
    entries: list[dict[str, Any]] = []
    for token in sorted(auth_list.tokens):
        if len(token) > MAX_TOKEN:
            continue
        info = id_tag_info(Verdict(ACCEPTED, auth_list.tokens[token]))
        entries.append({"id_tag": token, "id_tag_info": info})
    payload = call.SendLocalList(
        list_version=auth_list.version,
        update_type="Full",
        local_authorization_list=entries or None,
    )
    return Outgoing(payload, by_status), len(entries)
