"""Identity: users, API clients, roles, permissions, tokens.

Exceptions::

    IdentityError
     +-- InvalidTokenError   (bad, expired or forged bearer token)
     +-- GrantError          (OAuth2 token endpoint refusal, carries the RFC 6749 error code)

The HTTP answers (401 with WWW-Authenticate; 400, or 401 for ``invalid_client``) are chosen in
``cloud.api.errors``.
"""


class IdentityError(Exception):
    """Base of identity errors."""


class InvalidTokenError(IdentityError):
    """A bearer token that cannot be trusted."""


class GrantError(IdentityError):
    """An OAuth2 grant refused; ``error`` is the RFC 6749 section 5.2 code (``invalid_client``:
    the client failed to authenticate; ``invalid_grant``, ``invalid_request``...)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
