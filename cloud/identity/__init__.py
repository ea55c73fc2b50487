"""Identity: users, API clients, roles, permissions, tokens.

Exceptions::

    IdentityError
     +-- InvalidTokenError   (bad, expired or forged bearer token)
     +-- GrantError          (OAuth2 token endpoint refusal, carries the RFC 6749 error code)
     |    +-- RefreshReuseError      (a spent refresh token presented again: its family revoked)
     +-- LoginThrottledError (too many failed password logins: ``retry_after`` seconds)
     +-- DuplicateAssignmentError   (the holder has that very role assignment already)
     +-- SafetyRailError     (the change would lock the administrators out, see ``rails``)
          +-- LastAdminError        (no active user would hold platform:admin any more)
          +-- RoleFloorError        (a system role would lose what it needs to administer)

The HTTP answers (401 with WWW-Authenticate; 400, or 401 for ``invalid_client``; 429 with
Retry-After; 409 for the rails and duplicates) are chosen in ``cloud.api.errors``.
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


class RefreshReuseError(GrantError):
    """A refresh token that was already rotated came back: a copy is in someone's hands, and
    every token of its family (``family_id``, the sign-in of ``user_id``) has been revoked."""

    def __init__(self, user_id: int, family_id: str) -> None:
        super().__init__(
            "invalid_grant", "the refresh token was already used; its session has been revoked"
        )
        self.user_id = user_id
        self.family_id = family_id


class LoginThrottledError(IdentityError):
    """Too many failed password logins for this account or from this address: the next try is
    checked in ``retry_after`` seconds (whole, at least 1), whatever it holds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class DuplicateAssignmentError(IdentityError):
    """The holder already has this role in this organization with this narrowing; ``field``
    names the request field that repeats it (``role_id``, ``roles.1.role_id``)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: the holder has this role assignment already")
        self.field = field
        self.message = "the holder has this role assignment already"


class SafetyRailError(IdentityError):
    """A change refused because it would leave the platform without administrators."""


class LastAdminError(SafetyRailError):
    """The change would leave no active user holding platform:admin: nobody could administer the
    platform any more (only the CLI could recover it)."""


class RoleFloorError(SafetyRailError):
    """A system role would lose permissions its holders need to administer (``missing``)."""

    def __init__(self, role: str, missing: frozenset[str]) -> None:
        names = ", ".join(sorted(missing))
        super().__init__(f"the system role {role} must keep what it needs to administer: {names}")
        self.role = role
        self.missing = missing
