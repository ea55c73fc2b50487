"""The broker package's exceptions.

::

    BrokerAdminError                 keeping a broker in step with the registry failed
    ├── BrokerUnavailable            the broker cannot be reached (or did not answer in time)
    └── BrokerCommandError           the broker refused a command (the message says which)

Callers that must not fail with the broker (the credentials API) catch ``BrokerAdminError``,
log it and rely on the idempotent resync.
"""

from __future__ import annotations


class BrokerAdminError(Exception):
    """Keeping the broker in step with the device registry failed."""


class BrokerUnavailable(BrokerAdminError):  # noqa: N818 - a state, like ConnectionRefused
    """The broker cannot be reached, refused our admin login, or did not answer in time."""


class BrokerCommandError(BrokerAdminError):
    """The broker answered a command with an error."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error
