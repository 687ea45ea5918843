"""Fan the change log out to this process's subscribers (IDLE, NOTIFY, WebSocket).

One task per Store tails the change log by id (``changes_since(cursor)``, an
indexed primary-key range query) whenever it is kicked, and at the latest
every ``poll_seconds``.  After a local commit the writer calls
:meth:`ChangeWatcher.kick`, so subscribers in the same process hear of it at
once (within ``COALESCE_SECONDS`` under a stream of commits).  Commits made
by other processes or hosts wake it through ``notifications``: on SQLite a
look at the database files every ``[database] change_check_seconds``
(sqlite_changes.py), with the poll every ``POLL_SECONDS`` as a safety net;
on PostgreSQL a LISTEN connection (notifications.py) that kicks the watcher
when any host commits, with a slow safety poll (``[database]
safety_poll_seconds``).

Subscriber contract: :meth:`subscribe` returns a bounded receive channel
carrying the account's changes from the watcher's cursor on; that can
include changes committed shortly before the call, so a subscriber compares
MODSEQ/UIDs with what it already knows instead of assuming every change is new.
When a subscriber falls ``QUEUE_SIZE`` changes behind, its channel is closed
(after the changes already queued): ``receive()`` raises ``trio.EndOfChannel``
(an ``async for`` loop ends).  The same happens when the Store shuts down.
A subscriber that sees the end while it still wants changes must subscribe
again and then resynchronise from the database (``list_messages`` /
``get_mailbox``), since changes may have been dropped.  A subscriber stops by
closing its receive channel; the watcher then forgets it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from mailstack.store.records import Change, StoreError

log = logging.getLogger("mailstack.store")

POLL_SECONDS = 0.15
# With no subscriber the cursor is only kept fresh, at this pace at most and
# whatever the commit rate: a new subscriber then starts at most this far
# behind (the subscriber contract allows changes from shortly before).
IDLE_REFRESH_SECONDS = 0.15
# Least time between two polls (the most a local commit waits to be seen).
COALESCE_SECONDS = 0.01
QUEUE_SIZE = 1000
BATCH = 1000
# After a failed poll (database down) wait this long before the next one.
ERROR_BACKOFF_SECONDS = 2.0


class ChangeWatcher:
    def __init__(
        self,
        changes_since: Callable[[int, int], Awaitable[list[Change]]],
        last_change_id: Callable[[], Awaitable[int]],
        *,
        poll_seconds: float = POLL_SECONDS,
        notifications: Callable[[Callable[[], None]], Awaitable[None]] | None = None,
    ) -> None:
        self._changes_since = changes_since
        self._last_change_id = last_change_id
        self._poll_seconds = poll_seconds
        # Runs for the watcher's lifetime, calling kick() on remote commits.
        self._notifications = notifications
        self._subscribers: dict[int, set[trio.MemorySendChannel[Change]]] = {}
        self._wakeup = trio.Event()
        self._running = False

    def subscribe(self, account_id: int) -> trio.MemoryReceiveChannel[Change]:
        if not self._running:
            raise RuntimeError("change notifications need the store running (Store.run)")
        send, receive = trio.open_memory_channel[Change](QUEUE_SIZE)
        self._subscribers.setdefault(account_id, set()).add(send)
        return receive

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)

    def kick(self) -> None:
        """Poll now (called after a local commit), if anyone listens."""
        if self._subscribers:
            self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cursor = await self._last_change_id()
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                if self._notifications is not None:
                    nursery.start_soon(self._notifications, self.kick)
                task_status.started()
                await self._tail(cursor)
        finally:
            self._running = False
            for channels in self._subscribers.values():
                for channel in channels:
                    channel.close()
            self._subscribers.clear()

    async def _tail(self, cursor: int) -> None:
        while True:
            wait = self._poll_seconds
            if not self._subscribers:
                wait = min(wait, IDLE_REFRESH_SECONDS)
            with trio.move_on_after(wait):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                cursor = await self._drain(cursor)
            except StoreError as exc:
                log.warning("change log poll failed: %s", exc)
                await trio.sleep(ERROR_BACKOFF_SECONDS)
            # Kicks arriving meanwhile are served by one poll: under a
            # stream of commits, a query per commit would cost the
            # writer half its throughput.
            await trio.sleep(COALESCE_SECONDS)

    async def _drain(self, cursor: int) -> int:
        if not self._subscribers:
            # Nobody listens (e.g. a process serving only SMTP): move the
            # cursor with one max(id) read instead of loading every change.
            latest = await self._last_change_id()
            if not self._subscribers:
                return max(cursor, latest)
            # Someone subscribed during the read: changes between the old
            # cursor and that moment may be theirs, so tail them normally.
        while True:
            changes = await self._changes_since(cursor, BATCH)
            for change in changes:
                self._dispatch(change)
                cursor = change.id
            if len(changes) < BATCH:
                return cursor

    def _dispatch(self, change: Change) -> None:
        channels = self._subscribers.get(change.account_id)
        if not channels:
            return
        for channel in list(channels):
            try:
                channel.send_nowait(change)
            except trio.WouldBlock:
                # Too far behind: end its stream so it resubscribes and resyncs.
                channel.close()
                channels.discard(channel)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                channels.discard(channel)
        if not channels:
            del self._subscribers[change.account_id]
