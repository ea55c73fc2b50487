"""Identity: users, API clients, roles, permissions, tokens.

Exceptions::

    IdentityError
     +-- InvalidTokenError        (bad, expired or forged bearer token -> 401)
     +-- GrantError          (OAuth2 token endpoint refusal, carries the RFC 6749 error code)
"""


class IdentityError(Exception):
    """Base of identity errors."""


class InvalidTokenError(IdentityError):
    """A bearer token that cannot be trusted."""


class GrantError(IdentityError):
    """An OAuth2 grant refused; ``error`` is the RFC 6749 section 5.2 code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
