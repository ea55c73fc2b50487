"""Device commands: ``POST /devices/{id}/commands`` sends one command on ``af/{id}/cmd`` with a
correlation id; the device's ``cmd/result`` answers resolve it (docs/device-contract.md 4.5, 4.6).

A command is judged against the device family's parameter schema before it is sent: the
family must declare it (``kind: command``), one of the caller's roles must be in its ``write``
list, and its ``args`` must be the declared ones with values the schema accepts. A device whose
family ships no schema takes any well-formed command from a caller holding ``devices:command``.

States: ``pending`` (recorded; sent, or waiting for the worker to re-send it) → ``accepted``
(the device started it) → ``succeeded`` | ``rejected`` | ``error``; ``timed_out`` when no final
answer came before the command's ``expires``.

Exceptions::

    CommandError
     +-- CommandRefusedError            the schema refuses the command: ``field`` names why
         +-- CommandNotPermittedError   none of the caller's roles may send it
"""

from __future__ import annotations


class CommandError(Exception):
    """Base of this package's errors."""


class CommandRefusedError(CommandError):
    """The command may not be sent: ``field`` names what is wrong (``name``, ``args.<id>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CommandNotPermittedError(CommandRefusedError):
    """The command is declared, but none of the caller's roles is in its ``write`` list."""
