"""Labels, release and pairing: the two codes of a charger, from the factory line to its owner.

A charger carries a *charger code* (printed on the charger: unique, not secret, typable) and its
box a *box security code* (random, 95 bits, stored only as its KDF hash). The factory prints
both as QR codes (``labels``), scans both at the end of the line to release the charger
(``provisioned -> released``), and its buyer scans both to pair it and become its owner
(``service``). docs/pairing.md tells the whole story.

Exceptions::

    PairingError                  base: a short ``reason``, a ``message``, the ``field`` at
     |                            fault when one input is
     +-- CodeFormatError          a code that is no code of ours (length, alphabet, check
     |                            character): a typo
     +-- UnknownCodeError         no charger has this charger code (or not in the caller's reach)
     +-- WrongBoxCodeError        the box code is not this charger's (``remaining`` tries)
     +-- LockedOutError           too many wrong box codes for the charger or from the user
     |                            (``retry_after`` seconds)
     +-- PairingConflictError     the codes are right but the charger cannot take it now: not
                                  released yet, already released, box code used, already owned,
                                  wrong lifecycle state

The HTTP answers (422, 404, 429, 409) are chosen in ``cloud.api.errors``.
"""


class PairingError(Exception):
    """Base of the pairing package's errors: a short ``reason``, a message and, when one input
    is at fault, its ``field``."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.reason = reason
        self.message = message
        self.field = field


class CodeFormatError(PairingError):
    """A charger or box code that cannot be one of ours: a typo, caught by its check character."""


class UnknownCodeError(PairingError):
    """No charger has this charger code (or none the caller may reach)."""


class WrongBoxCodeError(PairingError):
    """The box code is not the one of this charger; ``remaining`` tries before a lockout."""

    def __init__(self, message: str, remaining: int | None = None) -> None:
        super().__init__("wrong_box_code", message, "box_code")
        self.remaining = remaining


class LockedOutError(PairingError):
    """Too many wrong box codes: the charger (``field`` charger_code) or the user (``field``
    None) may not try again for ``retry_after`` seconds."""

    def __init__(self, message: str, field: str | None, retry_after: int) -> None:
        super().__init__("locked_out", message, field)
        self.retry_after = retry_after


class PairingConflictError(PairingError):
    """Right codes, but the charger cannot be released or paired in its present state."""
