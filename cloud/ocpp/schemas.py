"""The OCPP JSON schemas (as the ocpp library ships them), compiled with fastjsonschema.

The library validates with ``jsonschema``, which is where most of a message's time went
(measured: 64 % of 375 µs per MeterValues); the same schemas compiled to Python code check a
message in a few µs, with the same verdicts and the same CallError for each kind of fault
(``ocpp.messages._validate_payload``): a wrong type or an over-long string is
TypeConstraintViolation, a missing field ProtocolError, an unknown field or anything else
FormatViolation. Like the library (a Draft4Validator without a format checker), ``format``
(date-time, uri) is not checked here: the translation parses what it uses.
"""

from __future__ import annotations

import functools
import json
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
_ANY_FORMAT = {name: (lambda _value: True) for name in ("date-time", "uri", "uri-reference")}
_BY_RULE: dict[str, type[OCPPError]] = {
    "type": TypeConstraintViolationError,
    "maxLength": TypeConstraintViolationError,
    "required": ProtocolError,
    "additionalProperties": FormatViolationError,
}


@functools.cache
def validator(version: str, action: str, response: bool) -> Callable[[Any], Any]:
    """The compiled check of a request (or its response) of ``action`` in ``version``."""
    suffix = "Response" if response else ("" if version == "1.6" else "Request")
    path = _ROOT / f"v{version.replace('.', '')}" / "schemas" / f"{action}{suffix}.json"
    # The 2.0.1 files start with a byte order mark.
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    schema.pop("$schema", None)  # draft-04 is fastjsonschema's reading of an unnamed draft too
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        schema, formats=_ANY_FORMAT, use_default=False
    )
    return compiled


def check(version: str, action: str, payload: Any, response: bool = False) -> None:
    """Raise the OCPPError the ocpp library would raise for a payload its schema refuses."""
    try:
        validator(version, action, response)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        error = _BY_RULE.get(str(exc.rule), FormatViolationError)
        raise error(details={"cause": exc.message}) from None
