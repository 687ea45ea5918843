"""Capture retention: keep each capture account's INBOX bounded by message
count and age, deleting the oldest first (``[capture] max_messages``,
``max_age_seconds``).

The count is checked soon after deliveries (:meth:`Retention.poke`, at most
once per ``POKE_SECONDS``) and everything every
``retention_interval_seconds``; expunges go through the store, so IMAP,
POP3 and WebSocket clients hear of them like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import trio

from mailstack.config import CaptureConfig
from mailstack.store.records import StoreError
from mailstack.store.store import Store

log = logging.getLogger("mailstack.capture")

# Deliveries within this long share one count check.
POKE_SECONDS = 1.0


class Retention:
    def __init__(self, store: Store, config: CaptureConfig, account_ids: Sequence[int]) -> None:
        self._store = store
        self._config = config
        self._account_ids = list(account_ids)
        self._poked = trio.Event()

    def poke(self) -> None:
        """A message was captured: check the counts soon."""
        self._poked.set()

    async def run(self, *, until: trio.Event) -> None:
        """Sweep until ``until`` is set (the service's graceful stop)."""
        if not self._config.max_messages and not self._config.max_age_seconds:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._loop)
            await until.wait()
            nursery.cancel_scope.cancel()

    async def _loop(self) -> None:
        next_full = trio.current_time()
        while True:
            with trio.move_on_at(next_full):
                await self._poked.wait()
            if self._poked.is_set():
                self._poked = trio.Event()
                await self.sweep(by_age=False)
                await trio.sleep(POKE_SECONDS)
            if trio.current_time() >= next_full:
                await self.sweep(by_age=True)
                next_full = trio.current_time() + self._config.retention_interval_seconds

    async def sweep(self, *, by_age: bool) -> int:
        """Prune every capture INBOX now; returns how many messages went."""
        keep = self._config.max_messages or None
        older_than = None
        if by_age and self._config.max_age_seconds:
            older_than = datetime.now(UTC) - timedelta(seconds=self._config.max_age_seconds)
        removed = 0
        for account_id in self._account_ids:
            try:
                inbox = await self._store.get_mailbox(account_id, "INBOX")
                if inbox is None:
                    continue
                if older_than is None and (keep is None or inbox.messages <= keep):
                    continue
                gone = await self._store.prune_mailbox(inbox.id, keep=keep, older_than=older_than)
            except StoreError as exc:
                log.warning("capture retention skipped account=%d: %s", account_id, exc)
                continue
            if gone:
                log.info(
                    "capture retention removed %d message(s) account=%d", len(gone), account_id
                )
                removed += len(gone)
        return removed
