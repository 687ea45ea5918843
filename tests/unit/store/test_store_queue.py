"""The outbound queue in the store: atomic submission, leases, outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import trio

from mailstack.store.records import (
    AccountRecord,
    NotFound,
    Outgoing,
    RecipientOutcome,
    RecipientState,
)
from mailstack.store.store import Store

RAW = b"Subject: out\r\n\r\nbody\r\n"


async def test_submit_stores_local_copy_and_queues_remote_in_one_call(
    store: Store, alice: AccountRecord
) -> None:
    outgoing = Outgoing("alice@example.test", ("x@a.test", "y@b.test", "x@a.test"))
    await store.submit(
        [alice.id], b"Return-Path: <alice@example.test>\r\n" + RAW, outgoing, queued_raw=RAW
    )
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and inbox.messages == 1
    [queued] = await store.list_queue()
    assert queued.sender == "alice@example.test" and queued.size == len(RAW)
    assert [(r.address, r.domain, r.state) for r in queued.recipients] == [
        ("x@a.test", "a.test", RecipientState.QUEUED),
        ("y@b.test", "b.test", RecipientState.QUEUED),
    ]
    assert await store.read_queued_content(queued.id) == RAW


async def test_claims_never_overlap_and_expired_leases_are_free(store: Store) -> None:
    await store.enqueue(Outgoing("s@x.test", ("a@a.test", "b@a.test", "c@b.test")), RAW)
    first = await store.claim_deliveries("one", lease_seconds=0.3, limit=10)
    # One job per domain: a.test carries both its recipients.
    assert sorted((j.domain, len(j.message.recipients)) for j in first) == [
        ("a.test", 2),
        ("b.test", 1),
    ]
    assert await store.claim_deliveries("two", lease_seconds=60, limit=10) == []
    await trio.sleep(0.4)
    taken = await store.claim_deliveries("two", lease_seconds=60, limit=10)
    assert len(taken) == 2
    # The first owner lost its lease: its outcome is not written.
    stale = [
        RecipientOutcome(r.id, RecipientState.DELIVERED, "250") for r in first[0].message.recipients
    ]
    assert await store.record_outcomes("one", stale) == 0
    assert all(
        r.state is RecipientState.QUEUED for m in await store.list_queue() for r in m.recipients
    )


async def test_outcomes_retry_and_cleanup(store: Store) -> None:
    message_id = await store.enqueue(Outgoing("s@x.test", ("a@a.test", "b@a.test")), RAW)
    [job] = await store.claim_deliveries("w", lease_seconds=60, limit=5)
    a, b = job.message.recipients
    later = datetime.now(UTC) + timedelta(hours=1)
    notice = (Outgoing("", ("s@x.test",)), b"Subject: bounce\r\n\r\n")
    written = await store.record_outcomes(
        "w",
        [
            RecipientOutcome(a.id, RecipientState.DELIVERED, "250 ok"),
            RecipientOutcome(b.id, RecipientState.QUEUED, "451 later", later),
        ],
        [notice],
    )
    assert written == 2
    queue = {m.id: m for m in await store.list_queue()}
    [dsn_id] = [i for i in queue if i != message_id]
    assert queue[dsn_id].sender == "" and queue[dsn_id].recipients[0].address == "s@x.test"
    waiting = queue[message_id].recipients[1]
    assert waiting.attempts == 1 and waiting.next_attempt_at > datetime.now(UTC)
    assert waiting.leased_until is None and waiting.last_result == "451 later"
    # Not due: not claimed; `queue retry` makes it due.
    jobs = await store.claim_deliveries("w", lease_seconds=60, limit=5)
    assert [j.message.id for j in jobs] == [dsn_id]
    assert await store.retry_queue(message_id) == 1
    [job] = await store.claim_deliveries("w", lease_seconds=60, limit=5)
    await store.record_outcomes("w", [RecipientOutcome(b.id, RecipientState.FAILED, "550 no")])
    # Every recipient done: the message left the queue.
    assert [m.id for m in await store.list_queue()] == [dsn_id]


async def test_delete_and_unknown_ids(store: Store) -> None:
    message_id = await store.enqueue(Outgoing("s@x.test", ("a@a.test",)), RAW)
    assert await store.delete_queued(message_id) == 1
    assert await store.list_queue() == []
    with pytest.raises(NotFound):
        await store.delete_queued(message_id)
    with pytest.raises(NotFound):
        await store.retry_queue(message_id)


async def test_local_delivery_of_a_queued_message(store: Store, alice: AccountRecord) -> None:
    await store.enqueue(Outgoing("", ("alice@example.test",)), RAW)
    [job] = await store.claim_deliveries("w", lease_seconds=60, limit=5)
    ids = [r.id for r in job.message.recipients]
    assert not await store.deliver_queued_locally("other", ids, [alice.id], RAW)
    assert await store.deliver_queued_locally("w", ids, [alice.id], RAW)
    inbox = await store.get_mailbox(alice.id, "INBOX")
    assert inbox is not None and inbox.messages == 1
    assert await store.list_queue() == []


async def test_next_due_waits_for_leases(store: Store) -> None:
    assert await store.next_queue_due() is None
    before = datetime.now(UTC)
    await store.enqueue(Outgoing("s@x.test", ("a@a.test",)), RAW)
    due = await store.next_queue_due()
    assert due is not None and before - timedelta(seconds=1) <= due <= datetime.now(UTC)
    await store.claim_deliveries("w", lease_seconds=600, limit=5)
    leased = await store.next_queue_due()
    assert leased is not None and leased > datetime.now(UTC) + timedelta(seconds=500)
