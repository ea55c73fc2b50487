"""The two codes of a charger, I/O-free: made, shown, read back.

Both are Crockford base32 (digits and upper-case letters without I, L, O, U, so that nothing
reads as something else; ``O`` typed for ``0`` and ``I``/``L`` for ``1`` are read as meant) with
a Luhn mod 32 check character, which catches every single wrong character and every swap of two
neighbours: a typo is refused before any lookup, and never counts as a wrong box code.

* charger code: 11 random characters (55 bits) and the check, ``XXXX-XXXX-XXXX``. Printed on
  the charger; not a secret (it names the charger, like a serial number), unique in the
  registry (a collision is drawn again).
* box code: 19 random characters (95 bits, above the 80 the issue asks) and the check,
  ``XXXXX-XXXXX-XXXXX-XXXXX``. In the box only; the registry keeps its argon2id hash.

Their lengths differ, so a scan of the wrong label is told apart from a typo.
"""

from __future__ import annotations

import secrets

from cloud.pairing import CodeFormatError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
# Crockford's decoding: look-alikes read as the symbol they resemble.
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})

CHARGER_RANDOM = 11
BOX_RANDOM = 19
CHARGER_LENGTH = CHARGER_RANDOM + 1
BOX_LENGTH = BOX_RANDOM + 1
CHARGER_GROUP = 4
BOX_GROUP = 5


def check_character(body: str) -> str:
    """Luhn mod 32 check character of ``body`` (Crockford symbols)."""
    factor, total = 2, 0
    for char in reversed(body):
        addend = factor * _VALUE[char]
        total += addend // 32 + addend % 32
        factor = 1 if factor == 2 else 2
    return ALPHABET[(32 - total % 32) % 32]


def _random(length: int) -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(length))
    return body + check_character(body)


def new_charger_code() -> str:
    """A fresh charger code, normalised (12 characters, no dashes)."""
    return _random(CHARGER_RANDOM)


def new_box_code() -> str:
    """A fresh box code, normalised (20 characters, no dashes): 95 random bits."""
    return _random(BOX_RANDOM)


def grouped(code: str) -> str:
    """How a normalised code is printed and shown: dash-separated groups."""
    size = CHARGER_GROUP if len(code) == CHARGER_LENGTH else BOX_GROUP
    return "-".join(code[i : i + size] for i in range(0, len(code), size))


def _normalise(text: str, length: int, field: str, what: str) -> str:
    code = "".join(text.split()).replace("-", "").upper().translate(_ALIASES)
    if len(code) != length:
        other = BOX_LENGTH if length == CHARGER_LENGTH else CHARGER_LENGTH
        hint = " (that is the length of the other label's code)" if len(code) == other else ""
        raise CodeFormatError(
            "format",
            f"a {what} has {length} characters besides dashes, not {len(code)}{hint}",
            field,
        )
    bad = sorted({c for c in code if c not in _VALUE})
    if bad:
        raise CodeFormatError(
            "format", f"characters {''.join(bad)!r} are in no {what} (Crockford base32)", field
        )
    if check_character(code[:-1]) != code[-1]:
        raise CodeFormatError(
            "format", f"not a valid {what}: its check character does not match (a typo?)", field
        )
    return code


def parse_charger_code(text: str, field: str = "charger_code") -> str:
    """The normalised charger code ``text`` spells (dashes, spaces, case and look-alikes
    forgiven); CodeFormatError naming ``field`` otherwise."""
    return _normalise(text, CHARGER_LENGTH, field, "charger code")


def parse_box_code(text: str, field: str = "box_code") -> str:
    """The normalised box code ``text`` spells; CodeFormatError naming ``field`` otherwise."""
    return _normalise(text, BOX_LENGTH, field, "box code")
