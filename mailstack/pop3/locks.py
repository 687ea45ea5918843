"""One POP3 session per maildrop (RFC 1939 8: "exclusive-access lock").

Interim implementation without a schema change: an ``flock`` on one small
file per account under ``data_dir/pop3-locks``.  flock locks belong to an
open file description, so two sessions in one process exclude each other
just as two processes on the host do, and the kernel drops the lock when a
process dies, so a crashed server never leaves a maildrop locked.

Limit: processes on *different hosts* sharing one PostgreSQL store do not
see each other's flocks.  A lock table in the store (account_id, holder,
expires_at) behind this same ``acquire``/``release`` interface closes that
gap; the methods are async so that implementation can replace this one
without touching the server.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class MaildropLocks:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._held: dict[int, int] = {}  # account_id -> fd holding the flock

    async def acquire(self, account_id: int) -> bool:
        """Take the account's lock without waiting; False if another session
        (in any process on this host) holds it."""
        if account_id in self._held:
            return False
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._directory / f"{account_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[account_id] = fd
        return True

    async def release(self, account_id: int) -> None:
        # The file stays: unlinking a lock file races with a concurrent
        # opener, who would then lock an orphaned inode.
        fd = self._held.pop(account_id, None)
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock
