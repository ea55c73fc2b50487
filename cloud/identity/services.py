"""OAuth2 grants (RFC 6749): password, client_credentials and refresh_token, with rotation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.identity import GrantError, RefreshReuseError
from cloud.identity.models import ApiClient, RefreshToken, User
from cloud.identity.passwords import SecretHasher
from cloud.identity.throttle import LoginThrottle, ThrottlePolicy
from cloud.identity.tokens import TokenService

REFRESH_PREFIX = "rt_"


@dataclasses.dataclass(frozen=True)
class IssuedTokens:
    """What the token endpoint returns."""

    access_token: str
    expires_in: int
    refresh_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret


class Authenticator:
    """Checks credentials and issues tokens."""

    def __init__(
        self,
        hasher: SecretHasher,
        tokens: TokenService,
        refresh_ttl: int,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.hasher = hasher
        self.tokens = tokens
        self.refresh_ttl = refresh_ttl
        self.throttle = throttle or LoginThrottle(ThrottlePolicy())

    def account(self, session: Session, email: str) -> User | None:
        """The user an e-mail given at login names, if any."""
        return session.scalar(select(User).where(User.email == email.strip().lower()))

    def password_grant(
        self, session: Session, email: str, password: str, address: str | None = None
    ) -> IssuedTokens:
        """Sign a user in with e-mail and password, from the client ``address``.

        Throttled (``LoginThrottledError``) before the password is even checked when this account
        or address failed too often; a wrong password is counted and committed at once, so that
        the count survives the caller's rollback of the refused grant.
        """
        self.throttle.check(session, email, address)
        user = self.account(session, email)
        # verify() spends the same time for unknown users, so timing does not reveal accounts.
        ok = self.hasher.verify(user.password_hash if user else None, password)
        if user is None or not ok or not user.is_active:
            session.rollback()
            self.throttle.failed(session, email, address)
            session.commit()
            raise GrantError("invalid_grant", "wrong e-mail or password, or the user is disabled")
        self.throttle.succeeded(session, email, address)
        if user.password_hash and self.hasher.needs_rehash(user.password_hash):
            user.password_hash = self.hasher.hash(password)
        user.last_login_at = utcnow()
        return self._for_user(session, user, family_id=secrets.token_hex(16))

    def client_credentials_grant(
        self, session: Session, client_id: str, secret: str
    ) -> IssuedTokens:
        """Authenticate a machine client. No refresh token (RFC 6749 section 4.4.3)."""
        client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
        ok = self.hasher.verify(client.secret_hash if client else None, secret)
        if client is None or not ok or not client.is_active:
            raise GrantError("invalid_client", "unknown client or wrong secret")
        token = self.tokens.issue(f"client:{client.id}", client.organization_id)
        return IssuedTokens(token, self.tokens.ttl)

    def refresh_grant(self, session: Session, presented: str) -> IssuedTokens:
        """Exchange a refresh token for new tokens; the old refresh token is spent."""
        stored = self._find(session, presented, lock=True)
        now = utcnow()
        if stored.revoked_at is not None:
            # A spent token presented again: someone holds a copy. Revoke the whole family.
            session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.family_id == stored.family_id, RefreshToken.revoked_at.is_(None)
                )
                .values(revoked_at=now)
            )
            session.commit()
            raise RefreshReuseError(stored.user_id, stored.family_id)
        if stored.expires_at <= now:
            raise GrantError("invalid_grant", "the refresh token has expired")
        user = session.get(User, stored.user_id)
        if user is None or not user.is_active:
            raise GrantError("invalid_grant", "the user is disabled")
        stored.revoked_at = now
        return self._for_user(session, user, family_id=stored.family_id)

    def revoke(self, session: Session, presented: str) -> None:
        """Revoke a refresh token and its family (sign-out, RFC 7009). Unknown tokens: no-op."""
        try:
            stored = self._find(session, presented, lock=False)
        except GrantError:
            return  # RFC 7009 section 2.2: invalid tokens do not cause an error
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == stored.family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )

    def _for_user(self, session: Session, user: User, family_id: str) -> IssuedTokens:
        public_id, secret = secrets.token_hex(16), secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                id=public_id,
                family_id=family_id,
                secret_hash=self.hasher.hash(secret),
                user_id=user.id,
                organization_id=user.organization_id,
                expires_at=utcnow() + dt.timedelta(seconds=self.refresh_ttl),
            )
        )
        access = self.tokens.issue(f"user:{user.id}", user.organization_id)
        return IssuedTokens(access, self.tokens.ttl, f"{REFRESH_PREFIX}{public_id}.{secret}")

    def _find(self, session: Session, presented: str, lock: bool) -> RefreshToken:
        public_id, _, secret = presented.removeprefix(REFRESH_PREFIX).partition(".")
        stmt = select(RefreshToken).where(RefreshToken.id == public_id[:32])
        if lock:
            # Two refreshes racing with one token: the second waits and then sees it spent.
            stmt = stmt.with_for_update()
        stored = session.scalar(stmt)
        if stored is None or not self.hasher.verify(stored.secret_hash, secret):
            raise GrantError("invalid_grant", "unknown refresh token")
        return stored
