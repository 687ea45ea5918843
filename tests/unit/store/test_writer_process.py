"""[database] writer_process: new messages committed by a child process.

Real child processes on real databases (SQLite, and PostgreSQL when
MAILSTACK_TEST_PG_URL is set); the child is stopped, killed and signalled
with real signals to show where the writes happen and that none is lost.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import trio

from mailstack.config import Config
from mailstack.store import migrate
from mailstack.store.records import AccountRecord, Outgoing, OverQuota, TemporaryFailure
from mailstack.store.store import Store, open_store
from tests.support.processes import process_exists

from .store_support import message


@pytest.fixture
async def child_store(config: Config) -> AsyncIterator[Store]:
    migrate.upgrade(config.database_url)
    config = replace(config, database=replace(config.database, writer_process=True))
    async with open_store(config) as opened:
        assert opened.writer_process_pid is None  # started by the first message
        yield opened


@pytest.fixture
async def carol(child_store: Store) -> AccountRecord:
    await child_store.add_domain("example.test")
    return await child_store.add_account("carol@example.test", "hash-c")


async def first_message_starts_the_child(store: Store, account: AccountRecord) -> int:
    [stored] = await store.deliver([account.id], message("starter"))
    assert stored.uid == 1  # committed by the thread writer meanwhile
    return await ready_pid(store)


async def ready_pid(store: Store, *, other_than: int | None = None) -> int:
    with trio.fail_after(30):
        while True:
            pid = store.writer_process_pid
            if pid is not None and pid != other_than:
                return pid
            await trio.sleep(0.02)


async def test_deliveries_are_committed_by_the_child(
    child_store: Store, carol: AccountRecord
) -> None:
    pid = await first_message_starts_the_child(child_store, carol)
    assert pid != os.getpid()
    sent = [message(f"m{i}") for i in range(30)]
    stored: list[int] = []

    async def deliver(raw: bytes) -> None:
        [one] = await child_store.deliver([carol.id], raw)
        stored.append(one.uid)

    # While the child is stopped nothing commits: the writes are its own.
    os.kill(pid, signal.SIGSTOP)
    try:
        async with trio.open_nursery() as nursery:
            for raw in sent:
                nursery.start_soon(deliver, raw)
            await trio.sleep(0.5)
            assert stored == []
            os.kill(pid, signal.SIGCONT)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert sorted(stored) == list(range(2, 32))
    inbox = await child_store.get_mailbox(carol.id, "INBOX")
    assert inbox is not None
    records = await child_store.list_messages(inbox.id, since_uid=1)
    contents = await child_store.read_contents([r.content_id for r in records])
    assert sorted(contents[r.content_id] for r in records) == sorted(sent)
    # The analysis made in the child is stored with the message (IMAP ENVELOPE).
    assert all(r.headers.get("subject", "").startswith("m") for r in records)


async def test_store_errors_cross_from_the_child(child_store: Store, carol: AccountRecord) -> None:
    await first_message_starts_the_child(child_store, carol)
    await child_store.set_quota("carol@example.test", None, 2)
    await child_store.deliver([carol.id], message("second"))
    with pytest.raises(OverQuota):
        await child_store.deliver([carol.id], message("third"))
    assert (await child_store.quota_usage(carol.id)).messages_used == 2


async def test_submission_queues_through_the_child(
    child_store: Store, carol: AccountRecord
) -> None:
    await first_message_starts_the_child(child_store, carol)
    outgoing = Outgoing(sender="carol@example.test", recipients=("dave@remote.test",))
    raw = message("out")
    [local] = await child_store.submit([carol.id], raw, outgoing)
    assert local.uid == 2
    [queued] = await child_store.list_queue()
    assert [r.address for r in queued.recipients] == ["dave@remote.test"]
    assert await child_store.read_queued_content(queued.id) == raw


async def test_a_killed_child_is_replaced_and_no_write_is_lost(
    child_store: Store, carol: AccountRecord
) -> None:
    first = await first_message_starts_the_child(child_store, carol)
    outcome: list[BaseException | None] = []

    async def deliver_in_flight() -> None:
        try:
            await child_store.deliver([carol.id], message("in flight"))
            outcome.append(None)
        except TemporaryFailure as exc:
            outcome.append(exc)

    # A batch the child holds when it dies fails temporarily (the SMTP
    # client gets 451 and sends again), never with a false success.
    os.kill(first, signal.SIGSTOP)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(deliver_in_flight)
        await trio.sleep(0.3)
        os.kill(first, signal.SIGKILL)
    assert len(outcome) == 1 and isinstance(outcome[0], TemporaryFailure)
    # Meanwhile and afterwards writes land: the thread writer covers the
    # gap, then a new child takes over.
    await child_store.deliver([carol.id], message("during"))
    second = await ready_pid(child_store, other_than=first)
    assert process_exists(second) and not process_exists(first)
    await child_store.deliver([carol.id], message("after"))
    inbox = await child_store.get_mailbox(carol.id, "INBOX")
    assert inbox is not None
    subjects = {r.headers["subject"] for r in await child_store.list_messages(inbox.id)}
    assert subjects == {"starter", "during", "after"}


async def test_the_child_ignores_group_signals_and_ends_with_the_store(
    config: Config,
) -> None:
    migrate.upgrade(config.database_url)
    config = replace(config, database=replace(config.database, writer_process=True))
    async with open_store(config) as store:
        await store.add_domain("example.test")
        account = await store.add_account("erin@example.test", "hash-e")
        pid = await first_message_starts_the_child(store, account)
        # A terminal's Ctrl-C or systemd's stop reaches the whole group: the
        # child keeps committing while the server drains its sessions.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(pid, signum)
        await trio.sleep(0.2)
        await store.deliver([account.id], message("still"))
        assert store.writer_process_pid == pid
    with trio.fail_after(15):
        while True:
            if not process_exists(pid):
                break
            await trio.sleep(0.05)


async def test_a_child_that_cannot_start_costs_speed_not_mail(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mailstack.store import writer_process

    monkeypatch.setattr(
        writer_process, "CHILD_COMMAND", (sys.executable, "-c", "raise SystemExit(3)")
    )
    migrate.upgrade(config.database_url)
    config = replace(config, database=replace(config.database, writer_process=True))
    async with open_store(config) as store:
        await store.add_domain("example.test")
        account = await store.add_account("frank@example.test", "hash-f")
        for number in range(6):
            await store.deliver([account.id], message(f"m{number}"))
            await trio.sleep(0.5)
        assert store.writer_process_pid is None
        inbox = await store.get_mailbox(account.id, "INBOX")
        assert inbox is not None
        assert len(await store.list_messages(inbox.id)) == 6
    waits = [
        r.getMessage().rsplit("next start in ", 1)[1]
        for r in caplog.records
        if "writer process failed" in r.getMessage()
    ]
    # Each start failed at once: the pause before the next one doubled.
    assert waits[:2] == ["1 s", "2 s"]
