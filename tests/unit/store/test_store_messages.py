"""Delivery, append, content, flags, copy/move/expunge, quota, change log."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio

from mailstack.config import Config, ImapConfig, SmtpConfig
from mailstack.store.records import (
    AccountRecord,
    ChangeKind,
    InvalidName,
    NotFound,
    OverQuota,
    TooBig,
)
from mailstack.store.store import Store, open_store
from tests.unit.store.store_support import message


async def _inbox_id(store: Store, account: AccountRecord) -> int:
    inbox = await store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    return inbox.id


async def test_deliver_stores_analysis_and_counts(store: Store, alice: AccountRecord) -> None:
    raw = message("Greetings")
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    [stored] = await store.deliver([alice.id], raw, internal_date=when)
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    assert (stored.uid, stored.uidvalidity, stored.mailbox_id) == (1, inbox.uidvalidity, inbox.id)
    assert (inbox.messages, inbox.unseen, inbox.size, inbox.uidnext) == (1, 1, len(raw), 2)
    assert inbox.highestmodseq == stored.modseq
    [record] = await store.list_messages(inbox.id)
    assert record.uid == 1 and record.flags == frozenset() and record.size == len(raw)
    assert record.internal_date == when
    assert record.headers["subject"] == "Greetings"
    assert record.envelope is not None and record.bodystructure is not None
    assert await store.read_content(record.content_id) == raw
    with pytest.raises(NotFound):
        await store.read_content(record.content_id + 1000)


async def test_deliver_to_several_accounts(
    store: Store, alice: AccountRecord, bob: AccountRecord
) -> None:
    stored = await store.deliver([bob.id, alice.id, bob.id], message())
    assert [s.account_id for s in stored] == [bob.id, alice.id]
    assert all(s.uid == 1 for s in stored)
    with pytest.raises(NotFound):
        await store.deliver([alice.id, 999_999], message())
    assert (await store.quota_usage(alice.id)).messages_used == 1  # all or nothing


async def test_uids_under_50_concurrent_writers(store: Store, alice: AccountRecord) -> None:
    results: list[int] = []

    async def writer(i: int) -> None:
        [stored] = await store.deliver([alice.id], message(f"m{i}"))
        results.append(stored.uid)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(writer, i)
    assert sorted(results) == list(range(1, 51))
    inbox_id = await _inbox_id(store, alice)
    listed = await store.list_messages(inbox_id)
    assert [m.uid for m in listed] == list(range(1, 51))
    # Each new message got its own, strictly increasing MODSEQ.
    assert len({m.modseq for m in listed}) == 50
    # Batched inserts kept each message with its own content.
    for record in listed:
        subject = record.headers["subject"].encode()
        assert b"Subject: " + subject + b"\r\n" in await store.read_content(record.content_id)
    assert len({record.headers["subject"] for record in listed}) == 50
    assert (await store.list_messages(inbox_id, since_uid=45))[0].uid == 46


PAYLOADS = {
    "eight-bit": "Subject: caf\u00e9\r\n\r\nna\u00efve \u2603\r\n".encode(),
    "bare-lf-cr": b"Subject: x\n\nline1\nline2\rline3\r\n\r\r\n\n",
    "nul-and-binary": b"Subject: bin\r\n\r\n" + bytes(range(256)) * 4 + b"\x00\x00",
    "no-header-end": b"just some bytes without a blank line",
    "empty": b"",
    "large-random": b"Subject: big\r\n\r\n" + os.urandom(3 * 1024 * 1024),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
async def test_content_round_trip(store: Store, alice: AccountRecord, name: str) -> None:
    raw = PAYLOADS[name]
    [stored] = await store.deliver([alice.id], raw)
    appended = await store.append(stored.mailbox_id, raw, flags=["\\Seen"])
    records = await store.list_messages(stored.mailbox_id)
    assert [r.uid for r in records] == [stored.uid, appended.uid]
    for record in records:
        assert record.size == len(raw)
        assert await store.read_content(record.content_id) == raw


async def test_append_flags_and_validation(store: Store, alice: AccountRecord) -> None:
    drafts = await store.get_mailbox(alice.id, "Drafts")
    assert drafts is not None
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    stored = await store.append(
        drafts.id, message(), flags=["\\draft", "$Label", "\\Recent"], internal_date=when
    )
    [record] = await store.list_messages(drafts.id)
    assert record.uid == stored.uid
    assert record.flags == {"\\Draft", "$Label"}
    assert record.internal_date == when
    with pytest.raises(InvalidName):
        await store.append(drafts.id, message(), flags=["bad flag"])
    with pytest.raises(NotFound):
        await store.append(999_999, message())


async def test_too_big(config: Config, alice: AccountRecord, store: Store) -> None:
    small = config.replace(smtp=SmtpConfig(max_message_bytes=2048))
    async with open_store(small) as limited:
        with pytest.raises(TooBig):
            await limited.deliver([alice.id], message(body=b"x" * 4096))
        assert (await limited.deliver([alice.id], message()))[0].uid == 1


async def test_quota(store: Store, alice: AccountRecord, bob: AccountRecord) -> None:
    raw = message(body=b"y" * 1000)
    await store.set_quota("alice@example.test", len(raw) * 2, None)
    await store.deliver([alice.id], raw)
    await store.deliver([alice.id], raw)
    with pytest.raises(OverQuota):
        await store.deliver([alice.id], raw)
    with pytest.raises(OverQuota):  # all or nothing: bob gets nothing either
        await store.deliver([bob.id, alice.id], raw)
    assert (await store.quota_usage(bob.id)).messages_used == 0
    inbox_id = await _inbox_id(store, alice)
    with pytest.raises(OverQuota):
        await store.append(inbox_id, raw)
    trash = await store.get_mailbox(alice.id, "Trash")
    assert trash is not None
    with pytest.raises(OverQuota):
        await store.copy_messages(inbox_id, [1], trash.id)
    # MOVE within the account does not change usage.
    assert await store.move_messages(inbox_id, [1], trash.id) == [(1, 1)]
    usage = await store.quota_usage(alice.id)
    assert (usage.bytes_used, usage.messages_used) == (2 * len(raw), 2)
    assert usage.quota_bytes == 2 * len(raw) and usage.quota_messages is None
    await store.set_flags(trash.id, [1], "add", ["\\Deleted"])
    assert await store.expunge(trash.id) == [1]
    usage = await store.quota_usage(alice.id)
    assert (usage.bytes_used, usage.messages_used) == (len(raw), 1)
    await store.deliver([alice.id], raw)  # room again
    await store.set_quota("alice@example.test", None, 2)
    with pytest.raises(OverQuota):
        await store.deliver([alice.id], raw)


async def test_group_commit_isolates_a_failing_item(
    store: Store, alice: AccountRecord, bob: AccountRecord
) -> None:
    await store.set_quota("alice@example.test", None, 0)
    outcomes: dict[str, object] = {}

    async def deliver(name: str, account_id: int) -> None:
        try:
            outcomes[name] = (await store.deliver([account_id], message(name)))[0].uid
        except OverQuota as exc:
            outcomes[name] = exc

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(deliver, f"bob{i}", bob.id)
            nursery.start_soon(deliver, f"alice{i}", alice.id)
    assert sorted(v for k, v in outcomes.items() if k.startswith("bob")) == list(range(1, 21))  # type: ignore[type-var]
    assert all(isinstance(v, OverQuota) for k, v in outcomes.items() if k.startswith("alice"))
    assert (await store.quota_usage(alice.id)).messages_used == 0


async def test_flags_copy_move_expunge_change_log(store: Store, alice: AccountRecord) -> None:
    inbox_id = await _inbox_id(store, alice)
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    for i in range(4):
        await store.deliver([alice.id], message(f"m{i}"))
    start = (await store.changes_since(0))[-1].id
    before = await store.get_mailbox_by_id(inbox_id)
    assert before is not None

    changed, failed = await store.set_flags(inbox_id, [1, 2, 99], "add", ["\\Seen", "\\Flagged"])
    assert [m.uid for m in changed] == [1, 2] and failed == []
    assert changed[0].flags == {"\\Seen", "\\Flagged"}
    modseq = changed[0].modseq
    assert modseq > before.highestmodseq and changed[1].modseq == modseq
    # No real change: nothing reported, MODSEQ untouched.
    assert await store.set_flags(inbox_id, [1], "add", ["\\Seen"]) == ([], [])
    changed, _ = await store.set_flags(inbox_id, [1], "remove", ["\\Flagged"])
    assert changed[0].flags == {"\\Seen"}
    changed, _ = await store.set_flags(inbox_id, [2], "replace", ["$Work"])
    assert changed[0].flags == {"$Work"}
    # RFC 7162 3.1.3 UNCHANGEDSINCE: uid 1 changed after `modseq`, uid 3 did not.
    changed, failed = await store.set_flags(
        inbox_id, [1, 3], "add", ["\\Answered"], unchanged_since=modseq
    )
    assert [m.uid for m in changed] == [3] and failed == [1]
    inbox = await store.get_mailbox_by_id(inbox_id)
    assert inbox is not None and inbox.unseen == 3

    assert await store.copy_messages(inbox_id, [3, 1], archive.id) == [(1, 1), (3, 2)]
    copies = await store.list_messages(archive.id)
    originals = {m.uid: m for m in await store.list_messages(inbox_id)}
    assert copies[0].flags == originals[1].flags
    assert copies[0].content_id == originals[1].content_id  # shared content
    assert await store.move_messages(inbox_id, [2, 4], archive.id) == [(2, 3), (4, 4)]
    assert [m.uid for m in await store.list_messages(inbox_id)] == [1, 3]

    await store.set_flags(inbox_id, [1, 3], "add", ["\\Deleted"])
    assert await store.expunge(inbox_id, [3]) == [3]
    assert await store.expunge(inbox_id) == [1]
    assert await store.expunge(inbox_id) == []
    # The copy of uid 1 still reads its (shared) content after the original went.
    assert await store.read_content(copies[0].content_id) == await store.read_content(
        copies[0].content_id
    )
    assert b"Subject: m0" in await store.read_content(copies[0].content_id)

    changes = await store.changes_since(start)
    kinds = [(c.mailbox_id, c.kind, c.uid) for c in changes]
    flags_rows = [k for k in kinds if k[1] is ChangeKind.MESSAGE_FLAGS]
    assert len(flags_rows) == 2 + 1 + 1 + 1 + 2  # the last two: \\Deleted
    assert (archive.id, ChangeKind.MESSAGE_NEW, 1) in kinds
    assert (inbox_id, ChangeKind.MESSAGE_EXPUNGED, 2) in kinds  # MOVE
    assert (archive.id, ChangeKind.MESSAGE_NEW, 4) in kinds
    assert (inbox_id, ChangeKind.MESSAGE_EXPUNGED, 1) in kinds
    # MODSEQ never decreases within a mailbox's log rows.
    for mailbox_id in (inbox_id, archive.id):
        seq = [c.modseq for c in changes if c.mailbox_id == mailbox_id]
        assert seq == sorted(seq)
    assert [c.id for c in changes] == sorted(c.id for c in changes)
    final = await store.get_mailbox_by_id(inbox_id)
    assert final is not None and final.highestmodseq == changes[-1].modseq
    assert final.messages == 0 and final.uidnext == 5


async def test_delete_mailbox_and_account_remove_content(
    store: Store, alice: AccountRecord
) -> None:
    folder = await store.create_mailbox(alice.id, "Folder")
    stored = await store.append(folder.id, message())
    [record] = await store.list_messages(folder.id)
    await store.delete_mailbox(alice.id, "Folder")
    with pytest.raises(NotFound):
        await store.read_content(record.content_id)
    assert (await store.quota_usage(alice.id)).messages_used == 0
    assert stored.uid == 1
    [delivered] = await store.deliver([alice.id], message())
    [inbox_msg] = await store.list_messages(delivered.mailbox_id)
    await store.delete_account("alice@example.test")
    with pytest.raises(NotFound):
        await store.read_content(inbox_msg.content_id)


async def test_rename_inbox_moves_messages(store: Store, alice: AccountRecord) -> None:
    for i in range(3):
        await store.deliver([alice.id], message(f"m{i}"))
    await store.rename_mailbox(alice.id, "INBOX", "Old Mail")
    inbox = await store.get_mailbox(alice.id, "INBOX")
    old = await store.get_mailbox(alice.id, "Old Mail")
    assert inbox is not None and old is not None
    assert inbox.messages == 0 and old.messages == 3
    assert old.uidvalidity > inbox.uidvalidity
    assert [m.uid for m in await store.list_messages(old.id)] == [1, 2, 3]
    [next_msg] = await store.deliver([alice.id], message())
    assert next_msg.uid == 4  # INBOX UIDs are never reused


async def test_subscribe_gets_local_changes_at_once(store: Store, alice: AccountRecord) -> None:
    channel = store.subscribe(alice.id)
    with trio.fail_after(5):
        [stored] = await store.deliver([alice.id], message())
        while True:
            change = await channel.receive()
            if change.kind is ChangeKind.MESSAGE_NEW:
                break
    assert change.uid == stored.uid and change.mailbox_name == "INBOX"
    assert change.modseq == stored.modseq
    await channel.aclose()


async def test_subscribe_sees_other_store_instances(
    config: Config, store: Store, alice: AccountRecord, bob: AccountRecord
) -> None:
    channel = store.subscribe(bob.id)
    async with open_store(config) as other:
        with trio.fail_after(5):
            await other.deliver([alice.id], message())  # not bob's: not seen
            [stored] = await other.deliver([bob.id], message())
            change = await channel.receive()
            while change.kind is not ChangeKind.MESSAGE_NEW:  # bob's mailbox creation
                change = await channel.receive()
    assert (change.account_id, change.uid, change.kind) == (
        bob.id,
        stored.uid,
        ChangeKind.MESSAGE_NEW,
    )


async def test_slow_subscriber_is_cut_off(store: Store, alice: AccountRecord) -> None:
    from mailstack.store import watcher

    slow = store.subscribe(alice.id)
    folder = await store.create_mailbox(alice.id, "F")
    await store.append(folder.id, message())
    uids = [1]
    with trio.fail_after(30):
        # Each flag change is one change-log row; overflow the queue
        # (concurrently, so group commit keeps this quick).
        async with trio.open_nursery() as nursery:
            for i in range(watcher.QUEUE_SIZE + 5):
                nursery.start_soon(store.set_flags, folder.id, uids, "replace", [f"k{i}"])
        # Not reading: the watcher overflows the queue and closes it.
        for _ in range(400):
            if not slow.statistics().open_send_channels:
                break
            await trio.sleep(0.05)
        received = 0
        with pytest.raises(trio.EndOfChannel):
            while True:
                await slow.receive()
                received += 1
    assert received == watcher.QUEUE_SIZE


async def test_mailbox_changes_are_logged(store: Store, alice: AccountRecord) -> None:
    start = (await store.changes_since(0))[-1].id
    created = await store.create_mailbox(alice.id, "Log")
    await store.rename_mailbox(alice.id, "Log", "Logged")
    await store.delete_mailbox(alice.id, "Logged")
    changes = await store.changes_since(start)
    assert [(c.kind, c.mailbox_id, c.mailbox_name) for c in changes] == [
        (ChangeKind.MAILBOX_CREATED, created.id, "Log"),
        (ChangeKind.MAILBOX_RENAMED, created.id, "Logged"),
        (ChangeKind.MAILBOX_DELETED, created.id, "Logged"),
    ]
    assert [c.modseq for c in changes] == [1, 2, 3]
    assert changes[1].detail == {"old": "Log", "new": "Logged"}
    assert await store.changes_since(start, limit=1) == changes[:1]


async def test_append_limit_and_subscription_end(config: Config, store: Store) -> None:
    await store.add_domain("example.test")
    account = await store.add_account("dave@example.test", "h")
    small = config.replace(imap=ImapConfig(max_literal_bytes=100))
    async with open_store(small) as limited:
        inbox = await limited.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        with pytest.raises(TooBig):
            await limited.append(inbox.id, b"x" * 101)
        channel = limited.subscribe(account.id)
    # The store stopped: the subscriber's stream ends.
    with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
        while True:
            await channel.receive()


async def test_quota_reached_inside_one_batch(store: Store, alice: AccountRecord) -> None:
    await store.set_quota("alice@example.test", None, 5)
    outcomes: list[int | None] = []

    async def deliver(i: int) -> None:
        try:
            outcomes.append((await store.deliver([alice.id], message(f"q{i}")))[0].uid)
        except OverQuota:
            outcomes.append(None)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(deliver, i)
    assert sorted(uid for uid in outcomes if uid is not None) == [1, 2, 3, 4, 5]
    assert outcomes.count(None) == 15
    usage = await store.quota_usage(alice.id)
    assert usage.messages_used == 5
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and (inbox.messages, inbox.uidnext) == (5, 6)


async def test_mixed_writes_in_one_batch(store: Store, alice: AccountRecord) -> None:
    """Deliveries, appends, flag changes and copies queued together keep
    UIDs unique and MODSEQ increasing (batch mode flushes between kinds)."""
    inbox_id = await _inbox_id(store, alice)
    archive = await store.get_mailbox(alice.id, "Archive")
    assert archive is not None
    await store.deliver([alice.id], message("seed"))

    async with trio.open_nursery() as nursery:
        for i in range(15):
            nursery.start_soon(store.deliver, [alice.id], message(f"d{i}"))
            nursery.start_soon(store.append, inbox_id, message(f"a{i}"))
            nursery.start_soon(store.set_flags, inbox_id, [1], "replace", [f"k{i}"])
            nursery.start_soon(store.copy_messages, inbox_id, [1], archive.id)
    listed = await store.list_messages(inbox_id)
    assert [m.uid for m in listed] == list(range(1, 32))
    copies = await store.list_messages(archive.id)
    assert [m.uid for m in copies] == list(range(1, 16))
    inbox = await store.get_mailbox_by_id(inbox_id)
    assert inbox is not None and inbox.uidnext == 32
    assert inbox.highestmodseq == max(m.modseq for m in listed)
    changes = [c for c in await store.changes_since(0, limit=10_000) if c.mailbox_id == inbox_id]
    modseqs = [c.modseq for c in changes]
    assert modseqs == sorted(modseqs)
    assert (await store.quota_usage(alice.id)).messages_used == 31 + 15
