"""Access tokens: RS256 JWTs we sign, and optionally those of an external OIDC issuer."""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

import jwt

from cloud.identity import InvalidTokenError
from cloud.identity.keys import SigningKey

AUDIENCE = "ampfleet-api"
# Only asymmetric algorithms: accepting HS256 would let anyone holding the public key forge.
_LOCAL_ALGORITHMS = ["RS256"]
_EXTERNAL_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


@dataclasses.dataclass(frozen=True)
class Claims:
    """A verified token: whom it names and where it came from."""

    subject: str  # "user:<id>" or "client:<id>" for our tokens, the IdP's sub otherwise
    organization_id: int | None  # the organization our token acts in; None for external
    external: bool
    email: str | None = None


class TokenService:
    """Issues our access tokens and verifies ours and, when configured, the external issuer's."""

    def __init__(
        self,
        key: SigningKey,
        issuer: str,
        ttl: int,
        oidc_issuer: str = "",
        oidc_jwks_url: str = "",
        oidc_audience: str = "",
        oidc_email_claim: str = "email",
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.ttl = ttl
        self.oidc_issuer = oidc_issuer
        self.oidc_audience = oidc_audience or None
        self.oidc_email_claim = oidc_email_claim
        self._jwks_client = jwt.PyJWKClient(oidc_jwks_url, lifespan=300) if oidc_jwks_url else None

    def issue(self, subject: str, organization_id: int) -> str:
        """A signed access token for ``subject`` acting in ``organization_id``."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "org": organization_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(
            claims, self.key.private_key, algorithm="RS256", headers={"kid": self.key.kid}
        )

    def verify(self, token: str) -> Claims:
        """Check signature, issuer, audience and expiry; InvalidTokenError says what failed."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("the token is not a JWT") from exc
        if self._jwks_client is not None and unverified.get("iss") == self.oidc_issuer:
            return self._verify_external(token)
        try:
            claims = jwt.decode(
                token,
                self.key.private_key.public_key(),
                algorithms=_LOCAL_ALGORITHMS,
                audience=AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("the token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"the token is not valid: {exc}") from exc
        org = claims.get("org")
        if not isinstance(org, int) or not isinstance(claims["sub"], str):
            raise InvalidTokenError("the token lacks its organization")
        return Claims(subject=claims["sub"], organization_id=org, external=False)

    def _verify_external(self, token: str) -> Claims:
        assert self._jwks_client is not None  # checked by the caller
        try:
            signing_key = self._jwks_client.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=_EXTERNAL_ALGORITHMS,
                audience=self.oidc_audience,
                issuer=self.oidc_issuer,
                options={
                    "require": ["exp", "iat", "sub", "iss"],
                    "verify_aud": self.oidc_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("the token has expired") from exc
        except jwt.PyJWKClientError as exc:
            raise InvalidTokenError(f"cannot get the issuer's signing key: {exc}") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"the token is not valid: {exc}") from exc
        email = claims.get(self.oidc_email_claim)
        if not isinstance(email, str) or not email:
            raise InvalidTokenError(f"the token has no {self.oidc_email_claim!r} claim")
        return Claims(
            subject=str(claims["sub"]), organization_id=None, external=True, email=email.lower()
        )
