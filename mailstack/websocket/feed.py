"""Change log -> JSON events for one WebSocket connection.

Each connection holds its own subscription to the store's watcher
(``Store.subscribe``), which tails the change log, so deliveries committed by
another process arrive too.  ``message.new`` needs the message's summary:
one read per new message for the whole service, shared through
:class:`EventCache` by every connection that hears of it at the same
moment (a test farm with a hundred listeners on one capture inbox costs one
query and one JSON encoding per message, not a hundred).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mailstack.store.records import Change, ChangeKind, StoreError
from mailstack.store.store import Store
from mailstack.websocket.protocol import encode
from mailstack.websocket.summary import change_event, message_summary

log = logging.getLogger("mailstack.websocket")

Summary = dict[str, Any]
SendText = Callable[[str], Awaitable[None]]


class EventCache:
    """The JSON text of each change's event, by change-log id, made once for
    all of an account's connections; at most one summary read in flight per
    new message however many connections ask for it."""

    def __init__(self, store: Store, max_entries: int = 4096) -> None:
        self._store = store
        self._max_entries = max_entries
        self._done: OrderedDict[int, str | None] = OrderedDict()
        self._pending: dict[int, trio.Event] = {}

    async def text(self, change: Change) -> str | None:
        """The frame to send, or None when there is none (a new message that
        is already gone, or the store failed)."""
        key = change.id
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
        try:
            event = change_event(change, await self._summary(change))
        except StoreError as exc:
            log.warning("event of change %d unavailable: %s", change.id, exc)
            return None
        else:
            text = None if event is None else encode(event)
            self._done[key] = text
            while len(self._done) > self._max_entries:
                self._done.popitem(last=False)
            return text
        finally:
            del self._pending[key]
            done.set()

    async def _summary(self, change: Change) -> Summary | None:
        if change.kind is not ChangeKind.MESSAGE_NEW or change.uid is None:
            return None
        records = await self._store.get_messages(change.mailbox_id, [change.uid])
        return message_summary(records[0], change.mailbox_name) if records else None


async def follow(
    store: Store,
    account_id: int,
    channel: trio.MemoryReceiveChannel[Change],
    cache: EventCache,
    send: SendText,
) -> None:
    """Send an event per change until the store stops.

    A subscriber that fell behind loses its channel (watcher.py); then the
    client gets ``{"event": "resync"}`` (events may be missing: list again)
    and the feed continues on a new subscription.
    """
    while True:
        with channel:
            async for change in channel:
                text = await cache.text(change)
                if text is not None:
                    await send(text)
        try:
            channel = store.subscribe(account_id)
        except RuntimeError:
            return  # the store stopped: the service is shutting down
        await send(encode({"event": "resync"}))
