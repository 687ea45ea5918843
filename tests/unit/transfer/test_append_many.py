"""Store.append_many: order, per-message refusals, quota fallback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailstack.store.imports import ImportMessage
from mailstack.store.records import InvalidName, NotFound, OverQuota, StoredMessage, TooBig
from mailstack.store.store import Store

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def msg(n: int, size: int = 0, flags: frozenset[str] = frozenset()) -> ImportMessage:
    raw = f"Subject: {n}\r\nMessage-ID: <{n}@x>\r\n\r\n".encode() + b"x" * size
    return ImportMessage(raw, flags, WHEN)


async def inbox(store: Store, address: str = "alice@example.test") -> tuple[int, int]:
    account = await store.get_account(address)
    assert account is not None
    mailbox = await store.get_mailbox(account.id, "INBOX")
    assert mailbox is not None
    return account.id, mailbox.id


async def test_consecutive_uids_in_order_with_flags_and_dates(store: Store) -> None:
    _, mailbox_id = await inbox(store)
    results = await store.append_many(
        mailbox_id, [msg(n, flags=frozenset({"\\seen", "kw"})) for n in range(5)]
    )
    assert [r.uid for r in results if isinstance(r, StoredMessage)] == [1, 2, 3, 4, 5]
    records = await store.list_messages(mailbox_id)
    assert [r.headers["subject"] for r in records] == ["0", "1", "2", "3", "4"]
    assert all(r.flags == {"\\Seen", "kw"} and r.internal_date == WHEN for r in records)
    contents = await store.read_contents([r.content_id for r in records])
    assert [contents[r.content_id] for r in records] == [msg(n).raw for n in range(5)]


async def test_refused_messages_are_returned_in_place(store: Store) -> None:
    account_id, mailbox_id = await inbox(store)
    big = ImportMessage(b"x" * (store._config.imap.max_literal_bytes + 1), frozenset(), WHEN)
    bad_flag = msg(9, flags=frozenset({"bad flag"}))
    results = await store.append_many(mailbox_id, [msg(1), big, bad_flag, msg(2)])
    assert isinstance(results[1], TooBig)
    assert isinstance(results[2], InvalidName)
    assert [r.uid for r in results if isinstance(r, StoredMessage)] == [1, 2]
    usage = await store.quota_usage(account_id)
    assert usage.messages_used == 2


async def test_over_quota_keeps_what_fits(store: Store) -> None:
    account_id, mailbox_id = await inbox(store)
    await store.set_quota("alice@example.test", None, 3)
    results = await store.append_many(mailbox_id, [msg(n) for n in range(5)])
    assert [type(r) for r in results] == [StoredMessage] * 3 + [OverQuota] * 2
    assert (await store.quota_usage(account_id)).messages_used == 3
    assert len(await store.list_messages(mailbox_id)) == 3


async def test_missing_mailbox(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.append_many(999_999, [msg(1)])
