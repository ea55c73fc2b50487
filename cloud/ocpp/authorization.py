"""Id tokens at the bridge: the cloud's local authorization list (docs/device-contract.md 4.9)
judging what OCPP chargers present, and its copy on the charger. I/O-free.

* The bridge follows ``af/{id}/auth/list`` of every charger it holds (retained, the complete
  list). It answers Authorize (1.6 5.2 / 2.0.1 C01), StartTransaction (1.6) and the idToken of a
  TransactionEvent (2.0.1 E01-E03) from it: ``Accepted`` (on the list, valid), ``Expired`` (its
  ``until`` passed) or ``Invalid`` (not on the list). OCPP id tokens are case-insensitive
  (1.6 CiString20, 2.0.1 IdTokenType), so the lookup is too.
* The tokens of the starts the cloud asked for (``charging.start``: the app's ``app-...`` tag,
  RemoteStartTransaction / RequestStartTransaction) are accepted too: the charger may authorize
  them (1.6 ``AuthorizeRemoteTxRequests``) and reports them in its StartTransaction.
* The charger keeps the same list (Local Authorization List Management, 1.6 5.15/5.9, 2.0.1
  D01/D02), so that cards work while it is offline: a Full SendLocalList whose version is the
  contract's, sent when it differs from the version the charger last confirmed, which the
  bridge asks for (GetLocalListVersion) on each connection. Those calls are each version's
  (``cloud.ocpp.v16.downlink``, ``cloud.ocpp.v201.downlink``).

What is remembered survives a reconnect to the same bridge (``AuthorizationMemory``): the list,
the version the charger confirmed and the remote-start tokens.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from cloud.ocpp.meter import format_time
from firmware.core import contract

ACCEPTED = "Accepted"
EXPIRED = "Expired"
INVALID = "Invalid"
REMOTE_TOKENS = 32  # remote-start tokens remembered per charger
MEMORY_LIMIT = 100_000  # chargers remembered per bridge (the least recently seen go first)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """How a token is answered: an OCPP AuthorizationStatus and, when known, until when."""

    status: str
    until: int | None = None  # ms

    @property
    def accepted(self) -> bool:
        """True for Accepted."""
        return self.status == ACCEPTED

    @property
    def refusal(self) -> str | None:
        """The ``reason`` of an ``authorization.refused`` event (contract 14), if refused."""
        return {INVALID: "unknown", EXPIRED: "expired"}.get(self.status)


class Authorizer:
    """One charger's tokens: the cloud's list, the remote starts, what the charger holds."""

    __slots__ = ("_remote", "_valid", "list", "on_charger")

    def __init__(self) -> None:
        self.list: contract.AuthList | None = None
        self.on_charger: int | None = None  # the list version the charger last confirmed
        self._valid: dict[str, int | None] = {}
        self._remote: list[str] = []

    def update(self, auth_list: contract.AuthList) -> None:
        """Take a list the cloud published (retained: the complete list)."""
        valid: dict[str, int | None] = {}
        for token, until in auth_list.tokens.items():
            key = token.casefold()
            if key in valid:  # the same card in two spellings: the longer validity holds
                other = valid[key]
                until = None if until is None or other is None else max(until, other)
            valid[key] = until
        self.list, self._valid = auth_list, valid

    def remember_remote(self, token: str) -> None:
        """A token the cloud asked the charger to start a session with."""
        self._remote.append(token.casefold())
        del self._remote[:-REMOTE_TOKENS]

    def verdict(self, token: str, now_ms: int) -> Verdict:
        """Accepted, Expired or Invalid for a token the charger presents."""
        key = token.casefold()
        if key in self._remote:
            return Verdict(ACCEPTED)
        if key not in self._valid:
            return Verdict(INVALID)
        until = self._valid[key]
        if until is not None and now_ms >= until:
            return Verdict(EXPIRED, until)
        return Verdict(ACCEPTED, until)

    def in_sync(self) -> bool:
        """True when the charger holds the list's version. OCPP's version 0 means "no list"
        (1.6 5.9, 2.0.1 D02): it matches only an empty list of version 0."""
        if self.list is None or self.on_charger is None:
            return self.list is None
        if self.on_charger == 0:
            return self.list.version == 0 and not self.list.tokens
        return self.on_charger == self.list.version


class AuthorizationMemory:
    """Each charger's ``Authorizer``, kept across its connections to this bridge; only for
    chargers that have a list or were asked to start (most of a large fleet's idle sockets
    cost nothing here)."""

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self.limit = limit
        self._by_id: collections.OrderedDict[str, Authorizer] = collections.OrderedDict()

    def find(self, device_id: str) -> Authorizer | None:
        """The charger's, if the bridge has one."""
        return self._by_id.get(device_id)

    def of(self, device_id: str) -> Authorizer:
        """The charger's (a new one for a charger not seen yet)."""
        found = self._by_id.get(device_id)
        if found is None:
            found = self._by_id[device_id] = Authorizer()
            while len(self._by_id) > self.limit:
                self._by_id.popitem(last=False)
        else:
            self._by_id.move_to_end(device_id)
        return found


def token_info(verdict: Verdict, expiry_key: str) -> dict[str, Any]:
    """The idTagInfo (1.6) or idTokenInfo (2.0.1) of an answer, in the library's snake_case;
    the version names its expiry field ``expiry_key``."""
    info: dict[str, Any] = {"status": verdict.status}
    if verdict.until is not None:
        info[expiry_key] = format_time(verdict.until)
    return info
