"""Change log -> JSON events for one WebSocket connection.

Each connection holds its own subscription to the store's watcher
(``Store.subscribe``), which tails the change log, so deliveries committed by
another process arrive too.  ``message.new`` needs the message's summary:
one read per new message for the whole service, shared through
:class:`SummaryCache` by every connection that hears of it at the same
moment (a test farm with a hundred listeners on one capture inbox costs one
query per message, not a hundred).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mailstack.store.records import Change, ChangeKind, StoreError
from mailstack.store.store import Store
from mailstack.websocket.summary import change_event, message_summary

log = logging.getLogger("mailstack.websocket")

Summary = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class SummaryCache:
    """Recent new-message summaries by (mailbox id, UID), with one read in
    flight per message however many connections ask for it."""

    def __init__(self, store: Store, max_entries: int = 4096) -> None:
        self._store = store
        self._max_entries = max_entries
        self._done: OrderedDict[tuple[int, int], Summary | None] = OrderedDict()
        self._pending: dict[tuple[int, int], trio.Event] = {}

    async def get(self, mailbox_id: int, uid: int, mailbox_name: str) -> Summary | None:
        """The summary, or None when the message is gone (or the store failed)."""
        key = (mailbox_id, uid)
        while True:
            if key in self._done:
                return self._done[key]
            pending = self._pending.get(key)
            if pending is None:
                break
            await pending.wait()
            if key not in self._done:
                return None  # the read failed; do not retry for every waiter
        done = self._pending[key] = trio.Event()
        summary: Summary | None = None
        try:
            records = await self._store.get_messages(mailbox_id, [uid])
            summary = message_summary(records[0], mailbox_name) if records else None
        except StoreError as exc:
            log.warning("summary of new message uid=%d unavailable: %s", uid, exc)
            return None
        else:
            self._done[key] = summary
            while len(self._done) > self._max_entries:
                self._done.popitem(last=False)
        finally:
            del self._pending[key]
            done.set()
        return summary


async def follow(
    store: Store,
    account_id: int,
    channel: trio.MemoryReceiveChannel[Change],
    cache: SummaryCache,
    send: Send,
) -> None:
    """Send an event per change until the store stops.

    A subscriber that fell behind loses its channel (watcher.py); then the
    client gets ``{"event": "resync"}`` (events may be missing: list again)
    and the feed continues on a new subscription.
    """
    while True:
        with channel:
            async for change in channel:
                summary = None
                if change.kind is ChangeKind.MESSAGE_NEW and change.uid is not None:
                    summary = await cache.get(change.mailbox_id, change.uid, change.mailbox_name)
                event = change_event(change, summary)
                if event is not None:
                    await send(event)
        try:
            channel = store.subscribe(account_id)
        except RuntimeError:
            return  # the store stopped: the service is shutting down
        await send({"event": "resync"})
