"""The store's side of QRESYNC (RFC 7162): one-snapshot resync reads, the
expunge history and its pruning floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailstack.store.records import AccountRecord
from mailstack.store.store import Store
from tests.unit.store.store_support import message


async def test_snapshot_reports_changes_and_expunges_since(
    store: Store, alice: AccountRecord
) -> None:
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    for n in range(5):
        await store.deliver([alice.id], message(f"m{n}"))
    start = await store.get_mailbox_by_id(inbox.id)
    assert start is not None
    since = start.highestmodseq
    await store.set_flags(inbox.id, [2], "add", ["\\Seen"])
    await store.set_flags(inbox.id, [3, 4], "add", ["\\Deleted"])
    assert await store.expunge(inbox.id) == [3, 4]
    await store.deliver([alice.id], message("new"))
    snapshot = await store.resync_snapshot(inbox.id, since)
    assert snapshot is not None
    assert [uid for uid, _ in snapshot.uid_flags] == [1, 2, 5, 6]
    assert [(r.uid, r.flags) for r in snapshot.changed] == [
        (2, frozenset({"\\Seen"})),
        (6, frozenset()),
    ]
    assert snapshot.vanished == [3, 4]
    assert snapshot.mailbox.highestmodseq > since
    assert await store.expunged_since(inbox.id, since) == [3, 4]
    now = snapshot.mailbox.highestmodseq
    later = await store.resync_snapshot(inbox.id, now)
    assert later is not None and later.changed == [] and later.vanished == []
    assert await store.resync_snapshot(10_000, 1) is None


async def test_pruning_raises_the_floor_and_answers_become_unknown(
    store: Store, alice: AccountRecord
) -> None:
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    for n in range(4):
        await store.deliver([alice.id], message(f"m{n}"))
    await store.set_flags(inbox.id, [1], "add", ["\\Deleted"])
    await store.expunge(inbox.id)
    pruned_at = await store.get_mailbox_by_id(inbox.id)
    assert pruned_at is not None
    # Nothing is old enough yet.
    assert await store.prune_expunge_log(datetime.now(UTC) - timedelta(days=1)) == (0, 0)
    assert await store.expunged_since(inbox.id, 1) == [1]
    removed, cursor = await store.prune_expunge_log(
        datetime.now(UTC) + timedelta(seconds=1), batch=1
    )
    assert removed == 1 and cursor > 0
    # Older clients: the log cannot say; newer ones still get exact answers.
    assert await store.expunged_since(inbox.id, 1) is None
    assert await store.expunged_since(inbox.id, pruned_at.highestmodseq) == []
    await store.set_flags(inbox.id, [2], "add", ["\\Deleted"])
    await store.expunge(inbox.id)
    assert await store.expunged_since(inbox.id, pruned_at.highestmodseq) == [2]
    snapshot = await store.resync_snapshot(inbox.id, 1)
    assert snapshot is not None and snapshot.vanished is None
    # Pruning again (nothing old) leaves the newer record alone.
    assert await store.prune_expunge_log(datetime.now(UTC) - timedelta(days=1)) == (0, 0)
    assert await store.expunged_since(inbox.id, pruned_at.highestmodseq) == [2]
    # A later run from the cursor finds the newer record once it is old.
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert (await store.prune_expunge_log(later, after_id=cursor))[0] == 1
    assert await store.expunged_since(inbox.id, pruned_at.highestmodseq) is None
