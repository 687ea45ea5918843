"""argon2id password hashes with the parameters from ``[auth]``.

Everything here is synchronous and CPU/memory heavy (one hash costs
``argon2_memory_kib`` of RAM): callers run it through
``trio.to_thread.run_sync`` with a ``CapacityLimiter`` (see authenticator.py).
"""

from __future__ import annotations

import functools

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from mailstack.config import AuthConfig

# Verified against the dummy hash when the account does not exist, so an unknown
# user costs the same argon2 work as a wrong password (no user enumeration by
# timing).  Nobody can log in with it: the dummy hash is never stored.
_DUMMY_PASSWORD = "mailstack dummy password for unknown users"


@functools.cache
def dummy_hash(auth: AuthConfig) -> str:
    """The module-wide dummy hash for these parameters, computed on first use."""
    return PasswordHasher(auth).hash(_DUMMY_PASSWORD)


class PasswordHasher:
    """argon2id (RFC 9106) with the configured cost; old hashes stay verifiable."""

    def __init__(self, auth: AuthConfig) -> None:
        self._auth = auth
        self._hasher = argon2.PasswordHasher(
            time_cost=auth.argon2_time_cost,
            memory_cost=auth.argon2_memory_kib,
            parallelism=auth.argon2_parallelism,
            type=argon2.Type.ID,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches; False for a mismatch or a malformed hash."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    @property
    def dummy_hash(self) -> str:
        return dummy_hash(self._auth)
