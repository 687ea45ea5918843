"""ChangeWatcher on its own: an in-memory change log stands in for the
database (the watcher only sees the two read functions it is given)."""

from __future__ import annotations

import trio

from mailstack.store.records import Change, ChangeKind
from mailstack.store.watcher import ChangeWatcher


class ChangeLog:
    """A growing list of changes with the watcher's two reads; counts them."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.loads = 0
        self.max_reads = 0
        self.during_max_read: list[object] = []  # run once inside the next max(id) read

    def add(self, account_id: int) -> Change:
        change_id = len(self.changes) + 1
        change = Change(
            id=change_id,
            account_id=account_id,
            mailbox_id=1,
            mailbox_name="INBOX",
            kind=ChangeKind.MESSAGE_NEW,
            uid=change_id,
            modseq=change_id,
            flags=frozenset(),
            detail={},
        )
        self.changes.append(change)
        return change

    async def changes_since(self, cursor: int, limit: int) -> list[Change]:
        self.loads += 1
        await trio.lowlevel.checkpoint()
        return [c for c in self.changes if c.id > cursor][:limit]

    async def last_change_id(self) -> int:
        self.max_reads += 1
        await trio.lowlevel.checkpoint()
        for hook in self.during_max_read:
            hook()  # type: ignore[operator]
        self.during_max_read.clear()
        return self.changes[-1].id if self.changes else 0


async def next_change_reaches_a_new_subscriber(watcher: ChangeWatcher, log: ChangeLog) -> None:
    """Subscribe, commit one change: it is the first thing the subscriber gets
    (no old change from a stale cursor comes before it)."""
    channel = watcher.subscribe(1)
    new = log.add(account_id=1)
    watcher.kick()
    with trio.fail_after(5):
        assert await channel.receive() == new


async def test_without_subscribers_no_change_is_loaded_but_the_cursor_moves() -> None:
    log = ChangeLog()
    watcher = ChangeWatcher(log.changes_since, log.last_change_id, poll_seconds=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        for _ in range(50):
            log.add(account_id=1)
            watcher.kick()
            await trio.sleep(0.005)
        await trio.sleep(0.05)
        assert log.loads == 0  # nobody listens: only max(id) reads
        assert log.max_reads > 1
        # A subscriber now hears only what comes next, not the 50 old changes.
        await next_change_reaches_a_new_subscriber(watcher, log)
        nursery.cancel_scope.cancel()


async def test_a_subscriber_arriving_during_the_max_read_misses_nothing() -> None:
    log = ChangeLog()
    watcher = ChangeWatcher(log.changes_since, log.last_change_id, poll_seconds=0.01)
    channels: list[trio.MemoryReceiveChannel[Change]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        await trio.sleep(0.03)
        # While the watcher reads max(id): a client subscribes, then a
        # change commits that the same read already counts.
        committed: list[Change] = []
        subscribed = trio.Event()
        log.during_max_read.append(lambda: channels.append(watcher.subscribe(1)))
        log.during_max_read.append(lambda: committed.append(log.add(account_id=1)))
        log.during_max_read.append(subscribed.set)
        watcher.kick()
        with trio.fail_after(5):
            await subscribed.wait()
            assert await channels[0].receive() == committed[0]
        nursery.cancel_scope.cancel()


async def test_without_subscribers_commits_do_not_drive_reads() -> None:
    from mailstack.store import watcher as watcher_module

    log = ChangeLog()
    # A PostgreSQL-like safety poll: only the idle refresh keeps the cursor fresh.
    watcher = ChangeWatcher(log.changes_since, log.last_change_id, poll_seconds=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        reads_at_start = log.max_reads
        started = trio.current_time()
        for _ in range(40):  # a commit (and its kick) every 10 ms
            log.add(account_id=1)
            watcher.kick()
            await trio.sleep(0.01)
        elapsed = trio.current_time() - started
        reads = log.max_reads - reads_at_start
        # One read per IDLE_REFRESH_SECONDS at most, not one per commit.
        assert 1 <= reads <= elapsed / watcher_module.IDLE_REFRESH_SECONDS + 1
        assert log.loads == 0
        # The cursor stayed close: a new subscriber hears the next change first.
        await trio.sleep(watcher_module.IDLE_REFRESH_SECONDS * 2)
        await next_change_reaches_a_new_subscriber(watcher, log)
        nursery.cancel_scope.cancel()
