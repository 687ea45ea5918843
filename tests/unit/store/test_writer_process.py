"""[database] writer_process: new messages committed by a child process.

Real child processes on real databases (SQLite, and PostgreSQL when
MAILSTACK_TEST_PG_URL is set); the child is stopped, killed and signalled
with real signals to show where the writes happen and that none is lost.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
import trio

from mailstack.config import Config
from mailstack.store import migrate
from mailstack.store.records import (
    AccountRecord,
    Outgoing,
    OverQuota,
    StoredMessage,
    TemporaryFailure,
)
from mailstack.store.store import Store, open_store
from mailstack.store.writer_process import NewMessage
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


async def test_writes_queued_while_the_child_commits_are_all_sent_to_it(
    child_store: Store, carol: AccountRecord
) -> None:
    pid = await first_message_starts_the_child(child_store, carol)
    outcome: list[BaseException | None] = []

    async def deliver(raw: bytes) -> None:
        try:
            await child_store.deliver([carol.id], raw)
            outcome.append(None)
        except TemporaryFailure as exc:
            outcome.append(exc)

    # Two waves while the child is stopped: the second does not wait for
    # the answer to the first, so both are the child's when it dies.
    # Nothing commits, and no write is answered with a false success.
    os.kill(pid, signal.SIGSTOP)
    async with trio.open_nursery() as nursery:
        for wave in ("a", "b"):
            for number in range(10):
                nursery.start_soon(deliver, message(f"{wave}{number}"))
            await trio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
    assert len(outcome) == 20
    assert all(isinstance(result, TemporaryFailure) for result in outcome)
    inbox = await child_store.get_mailbox(carol.id, "INBOX")
    assert inbox is not None
    subjects = {r.headers["subject"] for r in await child_store.list_messages(inbox.id)}
    assert subjects == {"starter"}


async def test_stopping_the_store_waits_for_what_the_child_owes(config: Config) -> None:
    migrate.upgrade(config.database_url)
    config = replace(config, database=replace(config.database, writer_process=True))
    stored: list[int] = []

    async def resume_later(pid: int) -> None:
        await trio.sleep(0.5)
        os.kill(pid, signal.SIGCONT)

    with trio.fail_after(30):
        async with trio.open_nursery() as outside:
            async with open_store(config) as store:
                await store.add_domain("example.test")
                account = await store.add_account("gina@example.test", "hash-g")
                pid = await first_message_starts_the_child(store, account)

                async def deliver(number: int) -> None:
                    [one] = await store.deliver([account.id], message(f"late{number}"))
                    stored.append(one.uid)

                os.kill(pid, signal.SIGSTOP)
                for number in range(5):
                    outside.start_soon(deliver, number)
                await trio.sleep(0.2)
                outside.start_soon(resume_later, pid)
                # Leaving the block cancels the store's tasks while the
                # stopped child holds the five writes.
            # The store has stopped: it waited for the child's answers.
            assert sorted(stored) == [2, 3, 4, 5, 6]


async def test_a_batch_that_cannot_be_pickled_goes_to_the_thread_writer(
    child_store: Store,
    carol: AccountRecord,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mailstack.store import writer_process

    pid = await first_message_starts_the_child(child_store, carol)
    real_frame = writer_process._frame

    def frame(value: object) -> bytes:
        if isinstance(value, list) and any(b"poison" in w.raw for w in value):
            raise pickle.PicklingError("cannot pickle this one")
        return real_frame(value)

    monkeypatch.setattr(writer_process, "_frame", frame)
    with trio.fail_after(20):  # a batch owed but never sent would hang here
        [stored] = await child_store.deliver([carol.id], message("poison"))
        [after] = await child_store.deliver([carol.id], message("after"))
    assert (stored.uid, after.uid) == (2, 3)
    assert child_store.writer_process_pid == pid  # the child was not restarted
    assert "a batch could not be pickled" in caplog.text


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


def test_the_child_takes_every_frame_already_sent_as_one_batch() -> None:
    from mailstack.store.writer_process import _frame, _receive_writes

    parent, child = socket.socketpair()
    with parent, child:
        frames = [_frame(["a"]), _frame(["b", "c"]), _frame(["d"]), _frame(["e"])]
        last = frames.pop()
        parent.sendall(b"".join(frames) + last[:3])  # the last one cut short
        buffer = bytearray()
        # Whole frames until the batch has at least the limit (2) of writes.
        assert _receive_writes(child, buffer, 2) == ["a", "b", "c"]
        assert _receive_writes(child, buffer, 2) == ["d"]
        parent.sendall(last[3:])
        assert _receive_writes(child, buffer, 2) == ["e"]
        assert buffer == bytearray()


def test_the_child_reads_no_further_than_its_batch() -> None:
    from mailstack.store.writer_process import _frame, _receive_writes

    parent, child = socket.socketpair()
    with parent, child:
        big = ["x" * 60_000]
        parent.sendall(_frame(big) * 3)
        buffer = bytearray()
        assert _receive_writes(child, buffer, 1) == big
        # What is not needed yet stays in the socket: a child that falls
        # behind makes the parent's sends wait instead of growing here.
        assert len(buffer) < 60_000
        assert child.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)


def test_new_messages_and_their_answers_cross_the_socket_unchanged() -> None:
    # NewMessage and StoredMessage pickle by hand (an int for the date, a
    # constructor call): every field must arrive, the date to the microsecond.
    outgoing = Outgoing(
        sender="a@example.org", recipients=("b@example.net",), smtputf8=True, eight_bit=True
    )
    paris = timezone(timedelta(hours=1))
    for when in (
        datetime(2026, 11, 29, 19, 27, 45, 932996, tzinfo=UTC),
        datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=paris),  # before the epoch, not UTC
    ):
        sent = NewMessage((3, 1), b"raw", when, outgoing, b"queued", submission=True)
        received = pickle.loads(pickle.dumps(sent, protocol=pickle.HIGHEST_PROTOCOL))
        assert received == sent
        assert received.internal_date == when  # the same instant (now in UTC)
    stored = StoredMessage(account_id=1, mailbox_id=2, uidvalidity=3, uid=4, modseq=5)
    assert pickle.loads(pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)) == stored
