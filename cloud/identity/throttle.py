"""The password login throttle: failed logins slow the guesser, never lock the owner out for long.

Failures are counted under three keys, each with its own limit:

* the account from one client address (``max_failures``, a handful): one guesser of one account;
* the client address (``max_failures_per_address``): one guesser trying many accounts;
* the account from anywhere (``max_failures_per_account``): many addresses guessing one account.
  Its block holds only for addresses that themselves failed on that account, so that the owner,
  signing in from an address that did not guess, is never kept out by other people's guesses.

When a key reaches its limit it is blocked for ``block_seconds``, doubling with each further
failure up to ``max_block_seconds``: a growing delay rather than a lock. While blocked, logins
under it are refused (``LoginThrottledError``, 429 with Retry-After) before any password is
checked, so a blocked guesser learns nothing and costs no KDF run. A success clears the account's
keys (not the address's). The counters are rows of ``login_failures`` (shared by every worker
process); a key whose last failure is older than ``window`` starts again from zero, and such rows
are deleted on the next failure, so the table holds at most the keys that failed in the window.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
from collections.abc import Callable

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.identity import LoginThrottledError
from cloud.identity.models import LoginFailures


@dataclasses.dataclass(frozen=True)
class ThrottlePolicy:
    """The limits (failures before a block) and delays (seconds) of the throttle."""

    max_failures: int = 5
    max_failures_per_address: int = 20
    max_failures_per_account: int = 50
    block_seconds: int = 30
    max_block_seconds: int = 900
    window: int = 3600


def _key(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()


def _keys(email: str, address: str | None) -> tuple[str, str, str]:
    """(pair, address, account) keys of a login attempt."""
    email, where = email.strip().lower(), address or "unknown"
    return _key("pair", f"{email}\0{where}"), _key("address", where), _key("account", email)


class LoginThrottle:
    """Counts failed password logins in the database and refuses logins under a blocked key."""

    def __init__(self, policy: ThrottlePolicy, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.policy = policy
        self.clock = clock

    def check(self, session: Session, email: str, address: str | None) -> None:
        """Raise :class:`LoginThrottledError` when a login of ``email`` from ``address`` must
        wait."""
        now = self.clock()
        pair, by_address, account = _keys(email, address)
        rows = {
            r.key: r
            for r in session.scalars(
                select(LoginFailures).where(LoginFailures.key.in_((pair, by_address, account)))
            )
        }
        live = {k: r for k, r in rows.items() if r.last_failed_at > now - self._window}
        if pair not in live:
            # The account-wide block is for the addresses that guessed it, not for its owner.
            live.pop(account, None)
        until = max((r.blocked_until for r in live.values() if r.blocked_until), default=None)
        if until is not None and until > now:
            raise LoginThrottledError(max(1, math.ceil((until - now).total_seconds())))

    def failed(self, session: Session, email: str, address: str | None) -> None:
        """Count one failed login of ``email`` from ``address`` (and purge forgotten keys)."""
        now = self.clock()
        pair, by_address, account = _keys(email, address)
        p = self.policy
        session.execute(
            delete(LoginFailures).where(
                LoginFailures.last_failed_at <= now - self._window,
                or_(LoginFailures.blocked_until.is_(None), LoginFailures.blocked_until <= now),
            )
        )
        for key, limit in (
            (pair, p.max_failures),
            (by_address, p.max_failures_per_address),
            (account, p.max_failures_per_account),
        ):
            self._count(session, key, limit, now)

    def succeeded(self, session: Session, email: str, address: str | None) -> None:
        """A right password: the account's counters start again (the address's do not)."""
        pair, _, account = _keys(email, address)
        session.execute(delete(LoginFailures).where(LoginFailures.key.in_((pair, account))))

    @property
    def _window(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.policy.window)

    def _count(self, session: Session, key: str, limit: int, now: dt.datetime) -> None:
        # Locked, so two worker processes counting the same key do not lose a failure.
        row = session.get(LoginFailures, key, with_for_update=True)
        if row is None:
            try:
                with session.begin_nested():
                    row = LoginFailures(key=key, failures=0, last_failed_at=now)
                    session.add(row)
            except IntegrityError:  # another process inserted it first
                row = session.get(LoginFailures, key, with_for_update=True, populate_existing=True)
                if row is None:  # pragma: no cover - deleted again in between
                    return
        if row.last_failed_at <= now - self._window:
            row.failures = 0
        row.failures += 1
        row.last_failed_at = now
        if row.failures >= limit:
            delay = self.policy.block_seconds * 2 ** min(row.failures - limit, 32)
            row.blocked_until = now + dt.timedelta(
                seconds=min(delay, self.policy.max_block_seconds)
            )
        session.flush()


def throttle_rows(session: Session, email: str, address: str | None) -> int:
    """How many counters a login of ``email`` from ``address`` has (for tests and operators)."""
    return int(
        session.scalar(select(func.count()).where(LoginFailures.key.in_(_keys(email, address))))
        or 0
    )
