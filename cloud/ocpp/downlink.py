"""From the contract to the charger: a command (docs/device-contract.md 4.5) as the OCPP call
of the charger's version, and the call's answer as the command's result (4.6). I/O-free.

``to_call`` raises ``UnsupportedCommandError`` for what the charger cannot be asked (an
unknown name, bad args, a 2.0.1-only call to a 1.6 charger); the session answers those
``rejected`` without calling. Transaction ids, EVSE/connector and enum names are the bridge's
normalised forms (see ``uplink``) turned back into each version's.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from ocpp.charge_point import remove_nones, serialize_as_dict
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from cloud.ocpp import UnsupportedCommandError
from cloud.ocpp.meter import format_time
from cloud.ocpp.uplink import Uplink
from cloud.ocpp.v16.uplink import VERSION as V16
from firmware.core import contract
from parameters import Family

# The id token of starts the cloud asks for without naming one (RemoteStartTransaction needs
# one; 1.6 IdToken is CiString20).
REMOTE_ID_TAG = "ampfleet-remote"
# Answers that mean done (the rest: refused, or failed where the status says so).
_DONE = frozenset({"Accepted", "Scheduled", "RebootRequired", "Unlocked", "AcceptedCanceled"})
_FAILED = frozenset({"UnlockFailed", "Failed"})
_PURPOSE_201 = {"ChargePointMaxProfile": "ChargingStationMaxProfile"}
_request_ids = itertools.count(1)


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


def plain(response: Any) -> dict[str, Any]:
    """A call_result dataclass as a JSON-able dict (snake_case, no empty fields)."""
    data = remove_nones(serialize_as_dict(response)) if response is not None else {}
    return {k: v for k, v in data.items() if k != "custom_data"}


def by_status(response: Any) -> Answer:
    """The usual reading: the answer's ``status`` says ok, refused or failed."""
    data = plain(response)
    status = str(data.get("status", "Accepted"))
    if status in _DONE:
        return Answer("ok", data)
    reason = status
    info = data.get("status_info") or {}
    if info.get("reason_code"):
        reason = f"{status}: {info['reason_code']}"
    return Answer("error" if status in _FAILED else "rejected", data, reason)


def _int(args: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    value = args.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise UnsupportedCommandError(f"bad_args: {key} must be an integer")
    return value


def _str(args: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = args.get(key)
    if value is None and required:
        raise UnsupportedCommandError(f"bad_args: {key} is required")
    if value is not None and not isinstance(value, str):
        raise UnsupportedCommandError(f"bad_args: {key} must be a string")
    return value


def config_target(family: Family | None, key: str, version: str) -> tuple[str, str | None]:
    """The 1.6 key, or the 2.0.1 (component, variable), that ``key`` names: a parameter id of
    the family (by its ``ocpp`` binding), else the raw key or ``Component.Variable``."""
    if family is not None:
        try:
            binding = family.parameter(key).binding
        except KeyError:
            binding = None
        if binding is not None and binding.kind == "ocpp":
            if version == V16 and isinstance(binding.get("key"), str):
                return str(binding.get("key")), None
            if version != V16 and isinstance(binding.get("component"), str):
                return str(binding.get("component")), str(binding.get("variable"))
            raise UnsupportedCommandError(f"bad_args: {key} has no OCPP {version} binding")
    if version == V16:
        return key, None
    component, dot, variable = key.partition(".")
    if not dot or not component or not variable:
        raise UnsupportedCommandError("bad_args: 2.0.1 keys are Component.Variable")
    return component, variable


def config_text(value: Any) -> str:
    """A configuration value as OCPP carries it (a string): booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_call(command: contract.Command, uplink: Uplink, family: Family | None) -> Outgoing:
    """The call that carries ``command`` to a charger of ``uplink.version``."""
    translate = _V16.get(command.name) if uplink.version == V16 else _V201.get(command.name)
    if translate is None:
        known = command.name in _V16 or command.name in _V201
        raise UnsupportedCommandError(
            f"not supported by OCPP {uplink.version}" if known else "unknown_command"
        )
    return translate(command.args, uplink, family)


# --- OCPP 1.6 -----------------------------------------------------------------------------


def _reset16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    mode = "Hard" if args.get("mode") == "hard" else "Soft"
    return Outgoing(call16.Reset(type=mode), by_status)


def remote_start_token(args: Mapping[str, Any]) -> str:
    """The id token a ``charging.start`` starts with: the cloud's (``app-...``) or ours."""
    return _str(args, "id_tag") or REMOTE_ID_TAG


def _start16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    tag = remote_start_token(args)
    payload = call16.RemoteStartTransaction(id_tag=tag, connector_id=_int(args, "connector"))
    return Outgoing(payload, by_status)


def _transaction(args: Mapping[str, Any], uplink: Uplink) -> str:
    named = _str(args, "transaction_id")
    if named is not None:
        return named
    connector = _int(args, "connector")
    if connector is None:
        raise UnsupportedCommandError("bad_args: name the connector or the transaction_id")
    running = uplink.on_connector(connector)
    if running is None:
        raise UnsupportedCommandError(f"no transaction on connector {connector}")
    return running.id


def _stop16(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    transaction = _transaction(args, uplink)
    if not transaction.isdigit():
        raise UnsupportedCommandError("bad_args: 1.6 transaction ids are integers")
    return Outgoing(call16.RemoteStopTransaction(transaction_id=int(transaction)), by_status)


def _unlock16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    return Outgoing(call16.UnlockConnector(connector_id=_int(args, "connector")), by_status)


def _read_configuration(response: Any) -> Answer:
    data = plain(response)
    values = {item["key"]: item.get("value") for item in data.get("configuration_key", [])}
    readonly = sorted(i["key"] for i in data.get("configuration_key", []) if i.get("readonly"))
    result = {"values": values, "readonly": readonly, "unknown": data.get("unknown_key", [])}
    return Answer("ok", result)


def _get16(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = _str(args, "key")
    keys = None if key is None else [config_target(family, key, V16)[0]]
    return Outgoing(call16.GetConfiguration(key=keys), _read_configuration)


def _set16(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = config_target(family, _str(args, "key", required=True) or "", V16)[0]
    value = config_text(args.get("value"))
    return Outgoing(call16.ChangeConfiguration(key=key, value=value), by_status)


def _profile_schedule(args: Mapping[str, Any]) -> dict[str, Any]:
    limit = args.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise UnsupportedCommandError("bad_args: limit must be a number")
    schedule: dict[str, Any] = {
        "charging_rate_unit": _str(args, "unit", required=True),
        # 1.6 7.9: one decimal place (the schema's multipleOf 0.1).
        "charging_schedule_period": [{"start_period": 0, "limit": round(float(limit), 1)}],
    }
    if args.get("duration") is not None:
        schedule["duration"] = _int(args, "duration")
    return schedule


def _set_profile16(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    connector = _int(args, "connector") or 0
    purpose = _str(args, "purpose") or (
        "TxDefaultProfile" if connector else "ChargePointMaxProfile"
    )
    profile: dict[str, Any] = {
        "charging_profile_id": _int(args, "profile_id", 1),
        "stack_level": _int(args, "stack_level", 0),
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
        "charging_schedule": _profile_schedule(args),
    }
    if purpose == "TxProfile":
        running = uplink.on_connector(connector)
        if running is None or not running.id.isdigit():
            raise UnsupportedCommandError(f"no transaction on connector {connector}")
        profile["transaction_id"] = int(running.id)
    payload = call16.SetChargingProfile(connector_id=connector, cs_charging_profiles=profile)
    return Outgoing(payload, by_status)


def _clear_profile16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call16.ClearChargingProfile(
        id=_int(args, "profile_id"),
        connector_id=_int(args, "connector"),
        charging_profile_purpose=_str(args, "purpose"),
    )
    return Outgoing(payload, by_status)


def _update16(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    payload = call16.UpdateFirmware(
        location=_str(args, "url", required=True) or "",
        retrieve_date=format_time(uplink.now_ms()),
    )
    return Outgoing(payload, lambda _r: Answer("ok", {}))  # 1.6 4.? answers nothing


def _trigger16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    message = _str(args, "message", required=True)
    payload = call16.TriggerMessage(requested_message=message, connector_id=_int(args, "connector"))
    return Outgoing(payload, by_status)


def _read_data_transfer(response: Any) -> Answer:
    answer = by_status(response)
    return answer


def _transfer16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call16.DataTransfer(
        vendor_id=_str(args, "vendor_id", required=True) or "",
        message_id=_str(args, "message_id"),
        data=_str(args, "data"),
    )
    return Outgoing(payload, _read_data_transfer)


def _signed16(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    chain = _str(args, "certificate_chain", required=True) or ""
    return Outgoing(call16.CertificateSigned(certificate_chain=chain), by_status)


# --- OCPP 2.0.1 ---------------------------------------------------------------------------


def _reset201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    mode = "Immediate" if args.get("mode") == "hard" else "OnIdle"
    return Outgoing(call201.Reset(type=mode), by_status)


def _start201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    tag = remote_start_token(args)
    payload = call201.RequestStartTransaction(
        id_token={"id_token": tag, "type": "Central"},
        remote_start_id=next(_request_ids),
        evse_id=_int(args, "connector"),
    )
    return Outgoing(payload, by_status)


def _stop201(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    payload = call201.RequestStopTransaction(transaction_id=_transaction(args, uplink))
    return Outgoing(payload, by_status)


def _unlock201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    connector = _int(args, "connector")
    return Outgoing(call201.UnlockConnector(evse_id=connector, connector_id=1), by_status)


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


def _get201(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    key = _str(args, "key")
    if key is None:
        if family is None:
            raise UnsupportedCommandError("bad_args: name the key (2.0.1 reads variables)")
        targets = []
        for parameter in family.parameters:
            if parameter.binding.kind == "ocpp" and parameter.binding.get("component"):
                targets.append(config_target(family, parameter.id, "2.0.1"))
    else:
        targets = [config_target(family, key, "2.0.1")]
    data = [{"component": {"name": c}, "variable": {"name": v}} for c, v in targets]
    return Outgoing(call201.GetVariables(get_variable_data=data), _read_variables)


def _read_set(response: Any) -> Answer:
    results = plain(response).get("set_variable_result", [])
    first = results[0] if results else {}
    status = first.get("attribute_status", "Rejected")
    data = {"status": status}
    if status in _DONE:
        return Answer("ok", data)
    return Answer("rejected", data, status)


def _set201(args: Mapping[str, Any], _u: Uplink, family: Family | None) -> Outgoing:
    component, variable = config_target(family, _str(args, "key", required=True) or "", "2.0.1")
    item = {
        "attribute_value": config_text(args.get("value")),
        "component": {"name": component},
        "variable": {"name": variable},
    }
    return Outgoing(call201.SetVariables(set_variable_data=[item]), _read_set)


def _set_profile201(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    evse = _int(args, "connector") or 0
    purpose = _str(args, "purpose") or ("TxDefaultProfile" if evse else "ChargePointMaxProfile")
    schedule = {"id": 1, **_profile_schedule(args)}
    profile: dict[str, Any] = {
        "id": _int(args, "profile_id", 1),
        "stack_level": _int(args, "stack_level", 0),
        "charging_profile_purpose": _PURPOSE_201.get(purpose, purpose),
        "charging_profile_kind": "Relative",
        "charging_schedule": [schedule],
    }
    if purpose == "TxProfile":
        running = uplink.on_connector(evse)
        if running is None:
            raise UnsupportedCommandError(f"no transaction on EVSE {evse}")
        profile["transaction_id"] = running.id
    return Outgoing(call201.SetChargingProfile(evse_id=evse, charging_profile=profile), by_status)


def _clear_profile201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    criteria: dict[str, Any] = {}
    if args.get("connector") is not None:
        criteria["evse_id"] = _int(args, "connector")
    if args.get("purpose") is not None:
        purpose = _str(args, "purpose") or ""
        criteria["charging_profile_purpose"] = _PURPOSE_201.get(purpose, purpose)
    payload = call201.ClearChargingProfile(
        charging_profile_id=_int(args, "profile_id"), charging_profile_criteria=criteria or None
    )
    return Outgoing(payload, by_status)


def _update201(args: Mapping[str, Any], uplink: Uplink, _f: Family | None) -> Outgoing:
    firmware = {
        "location": _str(args, "url", required=True),
        "retrieve_date_time": format_time(uplink.now_ms()),
    }
    payload = call201.UpdateFirmware(request_id=next(_request_ids), firmware=firmware)
    return Outgoing(payload, by_status)


def _publish201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call201.PublishFirmware(
        location=_str(args, "url", required=True) or "",
        checksum=_str(args, "md5", required=True) or "",
        request_id=next(_request_ids),
    )
    return Outgoing(payload, by_status)


def _trigger201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    connector = _int(args, "connector")
    evse = {"id": connector} if connector else None
    message = _str(args, "message", required=True)
    return Outgoing(call201.TriggerMessage(requested_message=message, evse=evse), by_status)


def _transfer201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    payload = call201.DataTransfer(
        vendor_id=_str(args, "vendor_id", required=True) or "",
        message_id=_str(args, "message_id"),
        data=args.get("data"),
    )
    return Outgoing(payload, _read_data_transfer)


def _signed201(args: Mapping[str, Any], _u: Uplink, _f: Family | None) -> Outgoing:
    chain = _str(args, "certificate_chain", required=True) or ""
    payload = call201.CertificateSigned(
        certificate_chain=chain, certificate_type="ChargingStationCertificate"
    )
    return Outgoing(payload, by_status)


Translate = Callable[[Mapping[str, Any], Uplink, Family | None], Outgoing]

_V16: dict[str, Translate] = {
    "reboot": _reset16,
    "charging.start": _start16,
    "charging.stop": _stop16,
    "connector.unlock": _unlock16,
    "config.get": _get16,
    "config.set": _set16,
    "charging_profile.set": _set_profile16,
    "charging_profile.clear": _clear_profile16,
    "firmware.update": _update16,
    "trigger": _trigger16,
    "data_transfer": _transfer16,
    "certificate.signed": _signed16,
}
_V201: dict[str, Translate] = {
    "reboot": _reset201,
    "charging.start": _start201,
    "charging.stop": _stop201,
    "connector.unlock": _unlock201,
    "config.get": _get201,
    "config.set": _set201,
    "charging_profile.set": _set_profile201,
    "charging_profile.clear": _clear_profile201,
    "firmware.update": _update201,
    "firmware.publish": _publish201,
    "trigger": _trigger201,
    "data_transfer": _transfer201,
    "certificate.signed": _signed201,
}


def ota_call(offer: contract.Ota, uplink: Uplink) -> Outgoing:
    """UpdateFirmware for a contract OTA offer (4.7): the image at ``offer.url``."""
    args = {"url": offer.url}
    return (
        _update16(args, uplink, None) if uplink.version == V16 else _update201(args, uplink, None)
    )


def config_call(parameter_id: str, value: Any, uplink: Uplink, family: Family) -> Outgoing:
    """ChangeConfiguration / SetVariables for one desired setting (remote configuration)."""
    args = {"key": parameter_id, "value": value}
    return _set16(args, uplink, family) if uplink.version == V16 else _set201(args, uplink, family)
