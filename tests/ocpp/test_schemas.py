"""The bridge's compiled schemas (``cloud/ocpp/schemas.py``) give the ocpp library's verdicts:
for every request and response schema of both versions, a minimal and a full valid payload and
their mutations (each enum member, an unknown enum value, a wrong type, a missing required
field, an unknown field) are accepted or refused alike, with the same CallError."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ocpp
import pytest
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, _validate_payload

from cloud.ocpp import schemas

ROOT = Path(ocpp.__file__).parent
Path_ = tuple[str | int, ...]


def _files() -> Iterator[tuple[str, str, bool]]:
    for version, folder in (("1.6", "v16"), ("2.0.1", "v201")):
        for path in sorted((ROOT / folder / "schemas").glob("*.json")):
            name = path.stem
            if name.endswith("Response"):
                yield version, name.removesuffix("Response"), True
            elif version == "1.6" or name.endswith("Request"):
                yield version, name.removesuffix("Request"), False


def _schema(version: str, action: str, response: bool) -> dict[str, Any]:
    suffix = "Response" if response else ("" if version == "1.6" else "Request")
    path = ROOT / f"v{version.replace('.', '')}" / "schemas" / f"{action}{suffix}.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return loaded


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _instance(node: dict[str, Any], root: dict[str, Any], full: bool) -> Any:
    """A valid value of ``node``: required fields only, or every field (``full``)."""
    node = _resolve(node, root)
    if "enum" in node:
        return node["enum"][-1 if full else 0]
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        names = list(properties) if full else node.get("required", [])
        return {name: _instance(properties[name], root, full) for name in names}
    if kind == "array":
        return [
            _instance(node["items"], root, full) for _ in range(max(1, node.get("minItems", 1)))
        ]
    if kind == "string":
        return "x" * max(1, node.get("minLength", 1))
    if kind in ("integer", "number"):
        return max(1, node.get("minimum", 1))
    if kind == "boolean":
        return True
    return "x"


def _sites(value: Any, node: dict[str, Any], root: dict[str, Any], at: Path_ = ()) -> Iterator:
    """(path, schema node) of every value in an instance."""
    node = _resolve(node, root)
    yield at, node
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key, item in value.items():
            yield from _sites(item, properties[key], root, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sites(item, node["items"], root, (*at, index))


def _replaced(value: Any, at: Path_, new: Any) -> Any:
    changed = copy.deepcopy(value)
    target = changed
    for part in at[:-1]:
        target = target[part]
    target[at[-1]] = new
    return changed


def _mutations(value: Any, root: dict[str, Any]) -> Iterator[Any]:
    yield value
    for at, node in _sites(value, root, root):
        if "enum" in node and at:
            for member in node["enum"]:
                yield _replaced(value, at, member)
            yield _replaced(value, at, "Bogus.Value")
        kind = node.get("type")
        if kind == "string" and at:
            yield _replaced(value, at, 5)
            if "maxLength" in node:
                yield _replaced(value, at, "y" * (node["maxLength"] + 1))
        if kind in ("integer", "number") and at:
            yield _replaced(value, at, "5")
        if kind == "object" and isinstance(value, dict):
            target = value
            for part in at:
                target = target[part]
            yield _replaced(value, (*at, "bogusField"), 1) if at else {**value, "bogusField": 1}
            for name in node.get("required", []):
                smaller = copy.deepcopy(target)
                smaller.pop(name, None)
                yield _replaced(value, at, smaller) if at else smaller


def _library(version: str, action: str, response: bool, payload: Any) -> type | None:
    message = CallResult("1", payload, action) if response else Call("1", action, payload)
    try:
        _validate_payload(message, version)
    except OCPPError as exc:
        return type(exc)
    return None


def _ours(version: str, action: str, response: bool, payload: Any) -> type | None:
    try:
        schemas.check(version, action, payload, response=response)
    except OCPPError as exc:
        return type(exc)
    return None


@pytest.mark.parametrize(
    ("version", "action", "response"),
    list(_files()),
    ids=lambda v: v if isinstance(v, str) else ("response" if v else "request"),
)
def test_the_compiled_schemas_give_the_librarys_verdicts(
    version: str, action: str, response: bool
) -> None:
    root = _schema(version, action, response)
    checked = 0
    for full in (False, True):
        for payload in _mutations(_instance(root, root, full), root):
            expected = _library(version, action, response, copy.deepcopy(payload))
            assert _ours(version, action, response, payload) == expected, payload
            checked += 1
    assert checked >= 2
