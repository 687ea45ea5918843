"""Store.append_all (IMAP MULTIAPPEND, RFC 3502): consecutive UIDs, one
transaction, nothing stored when one message does not fit; sort keys kept."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailstack.config import Config, ImapConfig
from mailstack.store.records import AccountRecord, OverQuota, TooBig
from mailstack.store.store import Store, open_store

RAW = b"Subject: Re: [list] hello\r\nDate: Mon, 2 Mar 2026 09:00:00 +0000\r\n\r\nbody\r\n"


async def test_append_all_consecutive_uids_and_keys(store: Store, alice: AccountRecord) -> None:
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    when = datetime(2024, 2, 1, 10, tzinfo=UTC)
    stored = await store.append_all(
        inbox.id, [(RAW, ["\\Seen"], None), (RAW + b"2", [], when), (RAW + b"33", ["$x"], None)]
    )
    assert [s.uid for s in stored] == [1, 2, 3]
    assert len({s.modseq for s in stored}) == 1  # one change
    records = await store.list_messages(inbox.id)
    assert [sorted(r.flags) for r in records] == [["\\Seen"], [], ["$x"]]
    assert records[1].internal_date == when
    keys = records[0].sort_keys
    assert keys is not None and keys["subject"] == "HELLO" and keys["reply"] is True
    # A copy keeps the keys.
    trash = await store.get_mailbox(alice.id, "Trash")
    assert trash is not None
    await store.copy_messages(inbox.id, [1], trash.id)
    (copy,) = await store.list_messages(trash.id)
    assert copy.sort_keys == keys


async def test_append_all_is_all_or_nothing(
    config: Config, store: Store, alice: AccountRecord
) -> None:
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None
    await store.set_quota(alice.address, None, 2)
    with pytest.raises(OverQuota):
        await store.append_all(inbox.id, [(RAW, [], None)] * 3)
    async with open_store(config.replace(imap=ImapConfig(max_literal_bytes=1024))) as small:
        with pytest.raises(TooBig):
            await small.append_all(inbox.id, [(RAW, [], None), (b"x" * 1025, [], None)])
    assert await store.list_messages(inbox.id) == []
    usage = await store.quota_usage(alice.id)
    assert (usage.bytes_used, usage.messages_used) == (0, 0)
    assert [s.uid for s in await store.append_all(inbox.id, [(RAW, [], None)] * 2)] == [1, 2]
