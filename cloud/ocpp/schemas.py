"""The OCPP JSON schemas (as the ocpp library ships them), compiled with fastjsonschema.

The library validates with ``jsonschema``, which is where most of a message's time went
(measured: 64 % of 375 µs per MeterValues); the same schemas compiled to Python code check a
message in a few µs, with the same verdicts and the same CallError for each kind of fault
(``ocpp.messages._validate_payload``): a wrong type or an over-long string is
TypeConstraintViolation, a missing field ProtocolError, an unknown field or anything else
FormatViolation. Like the library (a Draft4Validator without a format checker), ``format``
(date-time, uri) is not checked here: the translation parses what it uses.

One rewrite before compiling, for speed only (tests/ocpp/test_schemas.py checks that every
verdict is the library's): fastjsonschema checks a string ``enum`` by comparing the value with
each member in turn (22 comparisons for a 1.6 measurand), so a string enum becomes a ``format``
whose check is a frozenset lookup. A violation stays a FormatViolation, the library's answer
to an enum violation. (The schemas also put ``additionalProperties`` on strings, which means
nothing there; it is dropped rather than compiled into a dict check of every string.)
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp
from ocpp.exceptions import (
    FormatViolationError,
    OCPPError,
    ProtocolError,
    TypeConstraintViolationError,
)

_ROOT = Path(ocpp.__file__).parent
_ANY_FORMAT: dict[str, Callable[[str], bool]] = {
    name: (lambda _value: True) for name in ("date-time", "uri", "uri-reference")
}
# Enum members that may become part of a format's name (it is pasted into generated code).
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")
_BY_RULE: dict[str, type[OCPPError]] = {
    "type": TypeConstraintViolationError,
    "maxLength": TypeConstraintViolationError,
    "required": ProtocolError,
    "additionalProperties": FormatViolationError,
}


def _fast_enums(node: Any, formats: dict[str, Callable[[str], bool]]) -> Any:
    """The schema with each string enum as a set-lookup ``format`` (same verdicts)."""
    if isinstance(node, list):
        return [_fast_enums(item, formats) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _fast_enums(value, formats) for key, value in node.items()}
    if out.get("type") == "string":
        out.pop("additionalProperties", None)
        members = out.get("enum")
        if (
            isinstance(members, list)
            and members
            and all(isinstance(m, str) and _PLAIN.fullmatch(m) for m in members)
            and "format" not in out
        ):
            # The format's name is what a refusal says: "... must be one of A, B, C".
            name = "one of " + ", ".join(members)
            formats[name] = frozenset(members).__contains__
            out["format"] = name
            del out["enum"]
    return out


@functools.cache
def validator(version: str, action: str, response: bool) -> Callable[[Any], Any]:
    """The compiled check of a request (or its response) of ``action`` in ``version``."""
    suffix = "Response" if response else ("" if version == "1.6" else "Request")
    path = _ROOT / f"v{version.replace('.', '')}" / "schemas" / f"{action}{suffix}.json"
    # The 2.0.1 files start with a byte order mark.
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    schema.pop("$schema", None)  # draft-04 is fastjsonschema's reading of an unnamed draft too
    formats: dict[str, Callable[[str], bool]] = dict(_ANY_FORMAT)
    schema = _fast_enums(schema, formats)
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        schema, formats=formats, use_default=False
    )
    return compiled


def check(version: str, action: str, payload: Any, response: bool = False) -> None:
    """Raise the OCPPError the ocpp library would raise for a payload its schema refuses."""
    try:
        validator(version, action, response)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        error = _BY_RULE.get(str(exc.rule), FormatViolationError)
        raise error(details={"cause": exc.message}) from None
