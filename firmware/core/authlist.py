"""The charger's local authorization list (docs/device-contract.md 4.9), I/O-free.

The cloud publishes the complete list, retained, on ``af/{id}/auth/list`` with a new
``version`` whenever it changes; ``LocalList.apply`` takes a decoded ``contract.AuthList`` when
its version differs from the one held. ``dump``/``restore`` are its NVS record (the contract's
own encoding, so a record is checked like a message when it is read back): the list survives
reboots, and a card works while the charger is offline (OCPP 1.6 Local Authorization List,
2.0.1 D01). ``refusal`` says why a card is refused, in the words of ``authorization.refused``.
"""

from firmware.core import contract

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNKNOWN = "unknown"  # not on the list (or no list yet)
EXPIRED = "expired"  # on the list, but its ``until`` has passed (a guest's window)


class LocalList:
    """The list in force: None until the first one arrives."""

    __slots__ = ("list",)

    def __init__(self) -> None:
        self.list = None  # type: Any

    @property
    def version(self) -> "int | None":
        """The version held, None without a list."""
        return None if self.list is None else self.list.version

    def __len__(self) -> int:
        return 0 if self.list is None else len(self.list.tokens)

    def apply(self, auth_list: "Any") -> bool:
        """Take ``auth_list`` when its version differs from the one held (a retained replay of
        the same version changes nothing); True when it was taken."""
        if self.list is not None and self.list.version == auth_list.version:
            return False
        self.list = auth_list
        return True

    def refusal(self, uid: str, now_ms: int) -> "str | None":
        """None when ``uid`` may charge at ``now_ms``, else ``unknown`` or ``expired``."""
        held = self.list
        if held is None or uid not in held.tokens:
            return UNKNOWN
        return None if held.accepts(uid, now_ms) else EXPIRED

    def dump(self) -> bytes:
        """The NVS record (only meaningful when a list is held)."""
        held = self.list
        return contract.encode_auth_list(held.version, held.tokens)

    def restore(self, data: "bytes | None") -> None:
        """At boot: the list from its NVS record; a record that does not decode is ignored (the
        retained list comes again with the next connection)."""
        if not data:
            return
        try:
            self.list = contract.decode_auth_list(data)
        except contract.ContractError:
            self.list = None
