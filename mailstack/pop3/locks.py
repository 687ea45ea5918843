"""One POP3 session per maildrop (RFC 1939 8: "exclusive-access lock"),
across every process and host that shares the store.

The lock is a row in the store (``Store.lock_maildrop``) naming this
process as owner, with an expiry that :meth:`MaildropLocks.keep_alive`
renews every third of ``[pop3] lock_expiry_seconds``.  A session releases
its lock when it ends, whatever way; a process or host that dies cannot, so
its locks lapse at their expiry and the next session takes the maildrop
over.  Database-side advisory locks would drop at once with the
connection, but a host that vanishes without closing its TCP connection
keeps them until the server's keepalive gives up (hours by default); an
expiry bounds that wait on every backend, SQLite included.

If renewing fails for longer than the expiry (database unreachable),
another host may take the maildrop; :meth:`holds` then turns False and the
session must not apply its deletions.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

import trio

from mailstack.store.records import StoreError
from mailstack.store.store import Store

logger = logging.getLogger("mailstack.pop3")


def process_owner_name() -> str:
    """Unique per process start: host, pid and a random part (pids repeat)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class MaildropLocks:
    def __init__(self, store: Store, expiry_seconds: float, owner: str | None = None) -> None:
        self._store = store
        self._expiry = expiry_seconds
        self.owner = owner or process_owner_name()
        self._held: set[int] = set()
        self._lost: set[int] = set()

    async def acquire(self, account_id: int) -> bool:
        """Take the account's maildrop without waiting; False if another
        session (in this process or any other) holds it.  Raises StoreError
        (TemporaryFailure) when the store cannot answer."""
        if account_id in self._held:
            return False
        # Claimed before the await: a second session of this process asking
        # meanwhile is refused rather than also taking the (same-owner) row.
        self._held.add(account_id)
        taken = False
        try:
            taken = await self._store.lock_maildrop(account_id, self.owner, self._expiry)
        finally:
            if not taken:
                self._held.discard(account_id)
        return taken

    def holds(self, account_id: int) -> bool:
        """True while this process still owns the maildrop."""
        return account_id in self._held and account_id not in self._lost

    async def release(self, account_id: int) -> None:
        if account_id not in self._held:
            return
        self._held.discard(account_id)
        self._lost.discard(account_id)
        try:
            await self._store.unlock_maildrop(account_id, self.owner)
        except StoreError as exc:
            # The row lapses at its expiry; nothing else to do.
            logger.warning("pop3 could not release maildrop %d: %s", account_id, exc)

    async def keep_alive(self) -> None:
        """Renew the held locks until cancelled (one task per service)."""
        while True:
            await trio.sleep(self._expiry / 3)
            held = sorted(self._held - self._lost)
            if not held:
                continue
            try:
                lost = await self._store.renew_maildrop_locks(self.owner, held, self._expiry)
            except StoreError as exc:
                logger.warning("pop3 could not renew %d maildrop lock(s): %s", len(held), exc)
                continue
            for account_id in lost:
                # Only while still held: the session may have ended meanwhile.
                if account_id in self._held:
                    logger.warning("pop3 maildrop %d lock lapsed and was taken over", account_id)
                    self._lost.add(account_id)
