"""Invitations to own or use a charger: e-mailed, expiring, accepted with their secret.

An invitation's token is its public id and a secret. The id names it in lists, the audit log and
revocation; the secret travels only in the e-mail (the accept link) and is stored as its KDF
hash, like refresh tokens and client secrets, so a copy of the database accepts nothing. The
check costs the same whether the id exists or not, and failed checks are counted
(``SecretGuard``): per invitation, so that nobody guesses one invitation's secret from many
addresses, and per client address, since every check costs a KDF run. The accept route is
public; the secret is its credential.

Accepting creates the invitee's account in the charger's organization when the e-mail is unknown
(without any role: their rights come from the charger access alone), or attaches the access to
the existing account, and creates or updates the ``ChargerAccess`` row.

Exceptions::

    AccessError (cloud.access)
     +-- InvitationError              base: a short reason, a message, the field at fault
         +-- InvitationClosedError    revoked or expired, or already accepted (``reason``)
         +-- AccountError             the account cannot take it: disabled, or the password
                                      (``field``) given when it must not be or missing
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlencode

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.access import AccessError
from cloud.access import owners as access
from cloud.access.models import Invitation
from cloud.devices.models import Device
from cloud.identity.grants import AccessLevel, ChargerAccess
from cloud.identity.models import User
from cloud.identity.passwords import SecretHasher
from cloud.mail import Mail, header_text

API_PREFIX = "/api/v1"  # cloud.app.API_PREFIX (not imported: the app imports this package)


class InvitationState(enum.StrEnum):
    """Where an invitation is."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


class InvitationError(AccessError):
    """An invitation that cannot be accepted: a short ``reason``, a message and, when one
    input is at fault, its ``field``."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field


class InvitationClosedError(InvitationError):
    """Revoked or expired (gone for good), or already accepted: ``reason`` is the
    :class:`InvitationState` that closed it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)


class AccountError(InvitationError):
    """The invitee's account cannot take the invitation as asked: a ``field`` given wrongly,
    or (no field) the account's state, such as disabled."""


def new_token() -> tuple[str, str]:
    """A fresh (public id, secret) pair."""
    return secrets.token_hex(16), secrets.token_urlsafe(32)


def state(invitation: Invitation, now: dt.datetime) -> InvitationState:
    """Where ``invitation`` is at ``now``."""
    if invitation.revoked_at is not None:
        return InvitationState.REVOKED
    if invitation.accepted_at is not None:
        return InvitationState.ACCEPTED
    if invitation.expires_at <= now:
        return InvitationState.EXPIRED
    return InvitationState.PENDING


def check_open(invitation: Invitation, now: dt.datetime) -> None:
    """InvitationClosedError naming why, unless ``invitation`` can still be accepted."""
    current = state(invitation, now)
    if current is InvitationState.REVOKED:
        raise InvitationClosedError(current, "the invitation was revoked by its sender")
    if current is InvitationState.ACCEPTED:
        raise InvitationClosedError(current, "the invitation was already accepted")
    if current is InvitationState.EXPIRED:
        raise InvitationClosedError(
            current, f"the invitation expired at {invitation.expires_at.isoformat()}"
        )


def create(
    session: Session,
    hasher: SecretHasher,
    device: Device,
    email: str,
    level: AccessLevel,
    valid_from: dt.datetime | None,
    valid_until: dt.datetime | None,
    expires_at: dt.datetime,
    invited_by: int | None,
) -> tuple[Invitation, str]:
    """A new pending invitation and its secret (the secret exists nowhere else once mailed)."""
    public_id, secret = new_token()
    invitation = Invitation(
        id=public_id,
        device_id=device.id,
        email=email.strip().lower(),
        level=level,
        valid_from=valid_from if level is AccessLevel.GUEST else None,
        valid_until=valid_until if level is AccessLevel.GUEST else None,
        expires_at=expires_at,
        secret_hash=hasher.hash(secret),
        invited_by=invited_by,
    )
    session.add(invitation)
    session.flush()
    return invitation, secret


def accept_link(public_url: str, invitation_id: str, secret: str) -> str:
    """The link of the e-mail: the API's accept route with the secret."""
    query = urlencode({"secret": secret})
    return f"{public_url}{API_PREFIX}/invitations/{invitation_id}/accept?{query}"


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def invitation_mail(
    invitation: Invitation, secret: str, device: Device, inviter: str, public_url: str
) -> Mail:
    """The e-mail that carries the invitation's accept link."""
    charger = device.name or device.id
    shown = header_text(charger)  # a name may hold line breaks and controls: not in a header
    link = accept_link(public_url, invitation.id, secret)
    if invitation.level is AccessLevel.OWNER:
        subject = f"You are invited to co-own the charger {shown}"
        what = f'{inviter} invites you to become a co-owner of the charger "{charger}".'
    else:
        subject = f"You are invited to charge at {shown}"
        what = f'{inviter} invites you to charge at "{charger}" as a guest'
        if invitation.valid_from and invitation.valid_until:
            what += f", from {_when(invitation.valid_from)} until {_when(invitation.valid_until)}"
        elif invitation.valid_from:
            what += f", from {_when(invitation.valid_from)}"
        elif invitation.valid_until:
            what += f", until {_when(invitation.valid_until)}"
        what += "."
    text = (
        f"{what}\n\n"
        f"Accept it before {_when(invitation.expires_at)} with this link:\n\n{link}\n\n"
        "Opening it shows the invitation; your app accepts it by POSTing the secret of the link "
        "to the same address (with your name and a password if you have no account yet).\n\n"
        "If you did not expect this message, ignore it: nothing happens unless it is accepted.\n"
    )
    return Mail(to=(invitation.email,), subject=subject, text=text)


@dataclasses.dataclass(frozen=True)
class Accepted:
    """What accepting did."""

    access: ChargerAccess
    user: User
    user_created: bool
    changes: dict[str, object]


def account_for(session: Session, email: str) -> User | None:
    """The existing account of ``email``, if any."""
    return session.scalar(select(User).where(User.email == email))


def accept(
    session: Session,
    hasher: SecretHasher,
    invitation: Invitation,
    device: Device,
    name: str | None,
    password: str | None,
    now: dt.datetime,
) -> Accepted:
    """Accept a verified, open invitation: the account, the access, the invitation marked.

    The invitation is marked first, conditionally, so two accepts racing with one secret give
    one access and one InvitationClosedError (the row lock of the caller's select makes the
    second wait on MariaDB; the condition decides on both backends).
    """
    marked = session.execute(
        update(Invitation)
        .where(
            Invitation.id == invitation.id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
        )
        .values(accepted_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(marked, "rowcount", 0) != 1:
        raise InvitationClosedError(InvitationState.ACCEPTED, "the invitation was already accepted")
    user = account_for(session, invitation.email)
    created = False
    if user is None:
        if not password:
            raise AccountError(
                "password",
                "required: no account has this e-mail yet, choose a password",
                "password",
            )
        user = User(
            organization_id=device.organization_id,
            email=invitation.email,
            name=name or "",
            password_hash=hasher.hash(password),
        )
        session.add(user)
        session.flush()
        created = True
    else:
        if password:
            raise AccountError(
                "password",
                "an account with this e-mail exists: sign in with its password instead",
                "password",
            )
        if not user.is_active:
            raise AccountError("disabled", "the account of this e-mail is disabled")
    row, changes = access.grant(
        session,
        device.id,
        user.id,
        invitation.level,
        invitation.valid_from,
        invitation.valid_until,
        invitation.invited_by,
    )
    invitation.accepted_at = now
    invitation.accepted_by = user.id
    session.flush()
    return Accepted(row, user, created, changes)


class AttemptLimiter:
    """Failed secret checks per client address in a sliding window; past ``limit`` failures the
    address is refused until the oldest leaves the window. Per process, thread-safe, bounded."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds ``key`` must wait before its next try (0: it may try now)."""
        with self._lock:
            now = self._clock()
            failures = self._failures.get(key)
            if failures is None:
                return 0.0
            self._forget_old(failures, now)
            if len(failures) < self.limit:
                return 0.0
            return max(0.0, failures[0] + self.window - now)

    def failed(self, key: str) -> None:
        """Count one failed check of ``key``."""
        with self._lock:
            now = self._clock()
            failures = self._failures.setdefault(key, collections.deque(maxlen=self.limit))
            self._forget_old(failures, now)
            failures.append(now)
            if len(self._failures) > self.max_keys:
                # Forget addresses whose failures all left the window, then the oldest ones.
                for stale in [
                    k for k, d in self._failures.items() if not d or d[-1] <= now - self.window
                ]:
                    del self._failures[stale]
                while len(self._failures) > self.max_keys:
                    del self._failures[next(iter(self._failures))]

    def _forget_old(self, failures: collections.deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()


class SecretGuard:
    """Failed invitation secrets, limited per invitation and per client address."""

    def __init__(
        self,
        per_invitation: int = 10,
        per_address: int = 100,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.invitations = AttemptLimiter(per_invitation, window, clock=clock)
        self.addresses = AttemptLimiter(per_address, window, clock=clock)

    def retry_after(self, invitation_id: str, address: str) -> float:
        """Seconds before a secret of ``invitation_id`` from ``address`` is checked again."""
        return max(self.invitations.retry_after(invitation_id), self.addresses.retry_after(address))

    def failed(self, invitation_id: str, address: str) -> None:
        """Count one wrong secret (or unknown invitation) from ``address``."""
        self.invitations.failed(invitation_id)
        self.addresses.failed(address)
