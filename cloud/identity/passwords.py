"""Secret hashing with argon2id (RFC 9106 profiles), for passwords and client secrets."""

from __future__ import annotations

import argon2
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST, RFC_9106_HIGH_MEMORY, RFC_9106_LOW_MEMORY

_PROFILES = {
    "rfc9106-low-memory": RFC_9106_LOW_MEMORY,
    "rfc9106-high-memory": RFC_9106_HIGH_MEMORY,
    "insecure-fast-for-tests": CHEAPEST,
}


class SecretHasher:
    """Hashes and verifies secrets; a constant-cost dummy check hides which users exist."""

    def __init__(self, profile: str) -> None:
        self._hasher = PasswordHasher.from_parameters(_PROFILES[profile])
        self._dummy = self._hasher.hash("ampfleet-no-such-user")

    def hash(self, secret: str) -> str:
        """The argon2id hash of ``secret``, with its parameters and salt."""
        return self._hasher.hash(secret)

    def verify(self, stored: str | None, secret: str) -> bool:
        """True when ``secret`` matches; spends the same time when there is nothing stored."""
        try:
            return self._hasher.verify(stored or self._dummy, secret) and stored is not None
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with weaker parameters than the current profile."""
        return self._hasher.check_needs_rehash(stored)
