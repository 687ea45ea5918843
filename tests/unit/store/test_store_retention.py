"""Store methods added for the WebSocket API and capture retention:
paged listing, and pruning a mailbox by count and age through the expunge
path (change log, quota counters), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailstack.store.records import AccountRecord, ChangeKind
from mailstack.store.store import Store


async def fill(store: Store, alice: AccountRecord, ages_hours: list[int]) -> int:
    now = datetime.now(UTC)
    mailbox_id = 0
    for n, hours in enumerate(ages_hours):
        raw = f"Subject: m{n}\r\n\r\nbody {n}\r\n".encode()
        (stored,) = await store.deliver([alice.id], raw, internal_date=now - timedelta(hours=hours))
        mailbox_id = stored.mailbox_id
    return mailbox_id


async def test_list_messages_page(store: Store, alice: AccountRecord) -> None:
    mailbox_id = await fill(store, alice, [0] * 5)
    page = await store.list_messages_page(mailbox_id, after_uid=0, limit=2)
    assert [m.uid for m in page] == [1, 2]
    page = await store.list_messages_page(mailbox_id, after_uid=2, limit=10)
    assert [m.headers["subject"] for m in page] == ["m2", "m3", "m4"]


async def test_prune_by_count_then_age(store: Store, alice: AccountRecord) -> None:
    # m0 is the oldest by arrival order (UID) though not by date: count
    # retention goes by UID, age retention by internal date.
    mailbox_id = await fill(store, alice, [1, 50, 0, 0, 0])
    before = await store.changes_since(0)
    assert await store.prune_mailbox(mailbox_id, keep=4, older_than=None) == [1]
    cutoff = datetime.now(UTC) - timedelta(hours=24)
    assert await store.prune_mailbox(mailbox_id, keep=4, older_than=cutoff) == [2]
    assert await store.prune_mailbox(mailbox_id, keep=4, older_than=cutoff) == []
    remaining = await store.list_messages(mailbox_id)
    assert [m.headers["subject"] for m in remaining] == ["m2", "m3", "m4"]
    usage = await store.quota_usage(alice.id)
    assert usage.messages_used == 3
    changes = await store.changes_since(before[-1].id)
    assert [(c.kind, c.uid) for c in changes] == [
        (ChangeKind.MESSAGE_EXPUNGED, 1),
        (ChangeKind.MESSAGE_EXPUNGED, 2),
    ]
