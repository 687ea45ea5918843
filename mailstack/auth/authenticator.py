"""The one login check every service calls (SMTP AUTH, IMAP LOGIN/AUTHENTICATE,
POP3 USER/PASS and AUTH).

A failure never says why: unknown user, wrong password and locked-out client
all return ``None``, and an unknown user costs the same argon2 work as a wrong
password (verified against the dummy hash).  Failures are answered only after
the throttle's delay.  Passwords stay wrapped in :class:`Secret` and are never
logged.
"""

from __future__ import annotations

import logging

import trio

from mailstack.auth.passwords import PasswordHasher
from mailstack.auth.sasl import Credentials
from mailstack.auth.throttle import Throttle
from mailstack.config import Config
from mailstack.secret import Secret
from mailstack.store.records import AccountRecord, InvalidName, NotFound, StoreError
from mailstack.store.store import Store

log = logging.getLogger("mailstack.auth")


class Authenticator:
    def __init__(self, config: Config, store: Store) -> None:
        self._store = store
        self._hasher = PasswordHasher(config.auth)
        self._throttle = Throttle(config.auth)
        # Each hash holds argon2_memory_kib of RAM for its duration: bound how
        # many run at once so a burst of logins cannot exhaust memory.
        self._limiter = trio.CapacityLimiter(config.auth.max_concurrent_hashes)

    def is_locked_out(self, peer_ip: str, username: str) -> bool:
        return self._throttle.is_locked_out(peer_ip, username, trio.current_time())

    async def verify(
        self, username: str, password: Secret[str], *, peer_ip: str
    ) -> AccountRecord | None:
        """The account when ``password`` is right; None for every kind of failure
        (unknown user, wrong password, locked out).  Raises
        :class:`~mailstack.store.records.TemporaryFailure` when the store is down."""
        if self.is_locked_out(peer_ip, username):
            # No hash while locked out: the lockout exists to stop guessing,
            # and skipping the work keeps an attack from burning CPU.
            log.info("auth refused (locked out) user=%r ip=%s", username, peer_ip)
            await self._answer_failure(peer_ip, username)
            return None
        account = await self._lookup(username)
        stored_hash = account.password_hash if account is not None else None
        ok = await trio.to_thread.run_sync(
            self._check, stored_hash, password, limiter=self._limiter
        )
        if not ok or account is None:
            self._throttle.record_failure(peer_ip, username, trio.current_time())
            log.info("auth failed user=%r ip=%s", username, peer_ip)
            await self._answer_failure(peer_ip, username)
            return None
        self._throttle.record_success(peer_ip, username)
        if self._hasher.needs_rehash(account.password_hash):
            await self._rehash(account, password)
        return account

    async def verify_credentials(self, creds: Credentials, *, peer_ip: str) -> AccountRecord | None:
        """Verify SASL credentials.  RFC 4616 2: an authzid other than the authcid
        asks to act as another user, which nobody here is allowed to do."""
        account = await self.verify(creds.authcid, creds.password, peer_ip=peer_ip)
        if account is None:
            return None
        if creds.authzid and creds.authzid.casefold() != creds.authcid.casefold():
            log.warning(
                "auth refused: user=%r may not act as %r ip=%s",
                creds.authcid,
                creds.authzid,
                peer_ip,
            )
            return None
        return account

    async def _lookup(self, username: str) -> AccountRecord | None:
        try:
            return await self._store.get_account(username)
        except (InvalidName, NotFound):
            # A malformed address is just an unknown user.  TemporaryFailure
            # (database down) propagates: the client must get a temporary
            # error (SMTP 454, IMAP [UNAVAILABLE], POP3 [SYS/TEMP]), not
            # "wrong password", and it must not count as a failed guess.
            return None

    def _check(self, stored_hash: str | None, password: Secret[str]) -> bool:
        """Runs in a worker thread; always does exactly one argon2 verification."""
        if stored_hash is None:
            self._hasher.verify(self._hasher.dummy_hash, password.reveal())
            return False
        return self._hasher.verify(stored_hash, password.reveal())

    async def _answer_failure(self, peer_ip: str, username: str) -> None:
        await trio.sleep(self._throttle.delay_for(peer_ip, username, trio.current_time()))

    async def _rehash(self, account: AccountRecord, password: Secret[str]) -> None:
        """The configured argon2 cost changed since this hash was made: upgrade it."""
        new_hash = await trio.to_thread.run_sync(
            self._hasher.hash, password.reveal(), limiter=self._limiter
        )
        try:
            await self._store.set_password_hash(account.address, new_hash)
        except StoreError as exc:
            # The login itself succeeded; the next one will try again.
            log.warning("rehash failed user=%r: %s", account.address, exc)
        else:
            log.info("password rehashed with new parameters user=%r", account.address)
