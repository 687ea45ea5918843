"""POP3 against the real server with Python's poplib over real TLS.

Every client conversation runs in a thread (poplib blocks); the server runs in
the test's nursery via the ``stack_factory`` fixture.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

from mailstack.pop3.locks import MaildropLocks
from mailstack.store.records import MailboxRecord
from tests.integration.conftest import Stack, StackFactory

T = TypeVar("T")

ALICE = ("alice@example.test", "alice-password")
MESSAGE = (
    b"From: bob@example.test\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: dots\r\n"
    b"Message-ID: <dots@example.test>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"last line\r\n"
)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def deliver(stack: Stack, raw: bytes, address: str = ALICE[0]) -> int:
    """Store a message in the INBOX the way SMTP delivery does; its UID."""
    account = await stack.store.get_account(address)
    assert account is not None
    (stored,) = await stack.store.deliver([account.id], raw)
    return stored.uid


async def inbox_of(stack: Stack, address: str = ALICE[0]) -> MailboxRecord:
    account = await stack.store.get_account(address)
    assert account is not None
    inbox = await stack.store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    return inbox


def pop_tls(stack: Stack) -> poplib.POP3_SSL:
    host, port = stack.addr("pop3", implicit_tls=True)
    return poplib.POP3_SSL(host, port, context=stack.client_ssl_context(), timeout=30)


def pop_stls(stack: Stack) -> poplib.POP3:
    host, port = stack.addr("pop3")
    client = poplib.POP3(host, port, timeout=30)
    client.stls(stack.client_ssl_context())
    return client


def login(client: poplib.POP3) -> poplib.POP3:
    client.user(ALICE[0])
    client.pass_(ALICE[1])
    return client


def command(client: poplib.POP3, line: str) -> bytes:
    """One command and its one-line reply (poplib has no AUTH method)."""
    client.sock.sendall(line.encode() + b"\r\n")
    return client.file.readline().rstrip(b"\r\n")


def wire_retr(stack: Stack, command: bytes) -> bytes:
    """The raw multi-line reply to ``command`` (after a login), as sent."""
    host, port = stack.addr("pop3", implicit_tls=True)
    context = stack.client_ssl_context()
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        reader = tls.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        tls.sendall(b"USER %s\r\nPASS %s\r\n" % (ALICE[0].encode(), ALICE[1].encode()))
        assert reader.readline().startswith(b"+OK")
        assert reader.readline().startswith(b"+OK")
        tls.sendall(command + b"\r\n")
        reply = bytearray()
        while not reply.endswith(b"\r\n.\r\n"):
            line = reader.readline()
            assert line, "connection closed mid-reply"
            reply += line
        tls.sendall(b"QUIT\r\n")
        assert reader.readline() == b"+OK bye\r\n"
        return bytes(reply)


async def test_list_top_retr_byte_for_byte(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        uid = await deliver(stack, MESSAGE)
        inbox = await inbox_of(stack)

        def conversation() -> dict[str, Any]:
            client = login(pop_tls(stack))
            try:
                return {
                    "stat": client.stat(),
                    "list": client.list(),
                    "uidl": client.uidl(),
                    "top": client.top(1, 2),
                    "retr": client.retr(1),
                }
            finally:
                client.quit()

        got = await in_thread(conversation)
        assert got["stat"] == (1, len(MESSAGE))
        assert got["list"][1] == [b"1 %d" % len(MESSAGE)]
        (uidl_line,) = got["uidl"][1]
        number, unique = uidl_line.split(b" ")
        assert number == b"1" and unique == b"%d.%d" % (inbox.uidvalidity, uid)
        header, _body = MESSAGE.split(b"\r\n\r\n", 1)
        top_lines = got["top"][1]
        assert top_lines == [
            *header.split(b"\r\n"),
            b"",
            b"first line",
            b".a line that starts with a dot",
        ]
        response, lines, _octets = got["retr"]
        assert response == b"+OK %d octets" % len(MESSAGE)
        assert b"\r\n".join(lines) + b"\r\n" == MESSAGE  # poplib undoes the stuffing
        # On the wire: every line starting with "." carries one more.
        wire = await in_thread(wire_retr, stack, b"RETR 1")
        first, stuffed = wire.split(b"\r\n", 1)
        assert first == b"+OK %d octets" % len(MESSAGE)
        assert stuffed == (MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        top_wire = await in_thread(wire_retr, stack, b"TOP 1 0")
        assert top_wire == b"+OK top of message follows\r\n" + header + b"\r\n\r\n.\r\n"


async def test_message_sent_over_smtp_is_listed_and_retrieved(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp", "pop3"))
        body = MESSAGE.split(b"\r\n\r\n", 1)[1]

        def send() -> None:
            host, port = stack.addr("smtp")
            with smtplib.SMTP(host, port, timeout=30) as smtp:
                smtp.sendmail("bob@example.test", [ALICE[0]], MESSAGE)

        await in_thread(send)

        def fetch() -> tuple[tuple[int, int], list[bytes], int]:
            client = login(pop_stls(stack))
            try:
                count_size = client.stat()
                _response, lines, octets = client.retr(1)
                return count_size, lines, octets
            finally:
                client.quit()

        (count, size), lines, _octets = await in_thread(fetch)
        retrieved = b"\r\n".join(lines) + b"\r\n"
        assert count == 1
        assert size == len(retrieved)  # LIST/STAT sizes are the octets sent
        assert retrieved.endswith(b"\r\n\r\n" + body)
        assert b"Subject: dots\r\n" in retrieved


async def test_dele_quit_removes_and_uidl_is_stable(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        for n in range(3):
            await deliver(stack, MESSAGE.replace(b"dots", b"msg %d" % n))

        def first_session() -> list[bytes]:
            client = login(pop_tls(stack))
            uids = client.uidl()[1]
            client.dele(2)
            assert client.stat()[0] == 2
            client.quit()
            return uids

        def second_session() -> tuple[list[bytes], bytes]:
            client = login(pop_tls(stack))
            uids = client.uidl()[1]
            subject = next(ln for ln in client.retr(2)[1] if ln.startswith(b"Subject:"))
            client.quit()
            return uids, subject

        before = await in_thread(first_session)
        after, subject = await in_thread(second_session)
        ids_before = [line.split()[1] for line in before]
        ids_after = [line.split()[1] for line in after]
        assert ids_after == [ids_before[0], ids_before[2]]  # same ids, renumbered
        assert subject == b"Subject: msg 2"
        assert (await inbox_of(stack)).messages == 2


async def test_dropped_connection_deletes_nothing(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        await deliver(stack, MESSAGE)

        def drop() -> None:
            client = login(pop_tls(stack))
            client.dele(1)
            client.sock.close()  # vanish without QUIT

        await in_thread(drop)

        def count_after_drop() -> int:
            # The server notices the drop and releases the lock promptly;
            # retry [IN-USE] for a moment in case it has not yet.
            deadline = time.monotonic() + 10
            while True:
                client = pop_tls(stack)
                try:
                    login(client)
                except poplib.error_proto as exc:
                    client.quit()
                    if b"[IN-USE]" not in exc.args[0] or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
                    continue
                count = client.stat()[0]
                client.quit()
                return count

        assert await in_thread(count_after_drop) == 1


async def test_second_session_gets_in_use(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))

        def conversation() -> bytes:
            first = login(pop_tls(stack))
            second = pop_tls(stack)
            second.user(ALICE[0])
            with pytest.raises(poplib.error_proto) as refused:
                second.pass_(ALICE[1])
            second.quit()
            first.quit()
            third = login(pop_tls(stack))  # free again after QUIT
            third.quit()
            return bytes(refused.value.args[0])

        reply = await in_thread(conversation)
        assert reply.startswith(b"-ERR [IN-USE]")


async def test_the_maildrop_is_free_once_quit_is_answered(
    stack_factory: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 1939 6: QUIT's UPDATE state ends the session's hold on the
    # maildrop.  With a slow store (the release takes half a second), a
    # client that has its +OK and logs in again at once must not be told
    # the maildrop is in use.
    release = MaildropLocks.release

    async def slow_release(self: MaildropLocks, account_id: int) -> None:
        await trio.sleep(0.5)
        await release(self, account_id)

    monkeypatch.setattr(MaildropLocks, "release", slow_release)
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))

        def conversation() -> None:
            login(pop_tls(stack)).quit()
            login(pop_tls(stack)).quit()

        await in_thread(conversation)


async def test_graceful_stop_ends_idle_session_without_deleting(
    stack_factory: StackFactory,
) -> None:
    """SIGTERM-style stop: an idle session gets -ERR [SYS/TEMP] at once (not
    after the grace period) and its DELE never takes effect (no QUIT, no
    UPDATE state, RFC 1939 6)."""
    with trio.fail_after(30):
        stack = await stack_factory(services=("pop3",), grace_seconds=60.0)
        await deliver(stack, b"Subject: keep me\r\n\r\nbody\r\n")
        inbox = await inbox_of(stack)
        marked = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def idle_session() -> bytes:
            client = login(pop_tls(stack))
            client.dele(1)
            trio.from_thread.run_sync(marked.set, trio_token=token)
            return client.file.readline()  # type: ignore[attr-defined,no-any-return]

        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def run() -> None:
                result.append(await in_thread(idle_session))

            nursery.start_soon(run)
            await marked.wait()
            stack.stop.set()
        assert result == [b"-ERR [SYS/TEMP] server shutting down, try again later\r\n"]
        await stack.stopped.wait()
        uids = [uid for uid, _flags in await stack.store.list_uid_flags(inbox.id)]
        assert len(uids) == 1


async def test_stls_and_plaintext_refusal(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        await deliver(stack, MESSAGE)

        def conversation() -> tuple[dict[str, list[str]], bytes, dict[str, list[str]], int]:
            host, port = stack.addr("pop3")
            client = poplib.POP3(host, port, timeout=30)
            before = client.capa()
            with pytest.raises(poplib.error_proto) as refused:
                client.user(ALICE[0])
            client.stls(stack.client_ssl_context())
            after = client.capa()
            login(client)
            count = client.stat()[0]
            client.quit()
            return before, bytes(refused.value.args[0]), after, count

        before, refused, after, count = await in_thread(conversation)
        assert "STLS" in before and "USER" not in before and "SASL" not in before
        assert refused.startswith(b"-ERR [AUTH]")
        assert "STLS" not in after and "USER" in after and after["SASL"] == ["PLAIN", "LOGIN"]
        for capability in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"):
            assert capability in after
        assert after["EXPIRE"] == ["NEVER"] and after["IMPLEMENTATION"] == ["mailstack"]
        assert count == 1


async def test_auth_plain_and_login(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        await deliver(stack, MESSAGE)

        def conversation() -> list[bytes]:
            replies = []
            client = pop_tls(stack)
            token = base64.b64encode(b"\0alice@example.test\0alice-password").decode()
            replies.append(command(client, "AUTH PLAIN " + token))
            replies.append(command(client, "STAT"))
            client.quit()
            client = pop_tls(stack)
            replies.append(command(client, "AUTH LOGIN"))
            replies.append(command(client, base64.b64encode(ALICE[0].encode()).decode()))
            replies.append(command(client, base64.b64encode(ALICE[1].encode()).decode()))
            client.quit()
            return replies

        replies = await in_thread(conversation)
        assert replies[0].startswith(b"+OK maildrop has 1 messages")
        assert replies[1] == b"+OK 1 %d" % len(MESSAGE)
        assert replies[2:] == [
            b"+ VXNlcm5hbWU6",
            b"+ UGFzc3dvcmQ6",
            b"+OK maildrop has 1 messages (%d octets)" % len(MESSAGE),
        ]


async def test_wrong_password_and_unknown_user_look_the_same(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))

        def attempt(user: str, password: str) -> bytes:
            client = pop_tls(stack)
            client.user(user)
            with pytest.raises(poplib.error_proto) as refused:
                client.pass_(password)
            client.quit()
            return bytes(refused.value.args[0])

        wrong = await in_thread(attempt, ALICE[0], "not-it")
        unknown = await in_thread(attempt, "nobody@example.test", "not-it")
        assert wrong == unknown == b"-ERR [AUTH] invalid user name or password"


async def test_snapshot_and_concurrent_expunge(stack_factory: StackFactory) -> None:
    """Mail arriving during a session is not shown; a message another
    session expunges fails RETR, and QUIT still succeeds."""
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))
        first_uid = await deliver(stack, MESSAGE)
        await deliver(stack, MESSAGE.replace(b"dots", b"second"))
        inbox = await inbox_of(stack)
        client = await in_thread(lambda: login(pop_tls(stack)))
        try:
            await deliver(stack, MESSAGE.replace(b"dots", b"late"))
            # What an IMAP client's STORE \Deleted + EXPUNGE does.
            await stack.store.set_flags(inbox.id, [first_uid], "add", ["\\Deleted"])
            await stack.store.expunge(inbox.id, [first_uid])
            await trio.sleep(0.5)  # let the change reach this process's watcher
            assert (await in_thread(client.stat))[0] == 2
            with pytest.raises(poplib.error_proto) as gone:
                await in_thread(client.retr, 1)
            assert gone.value.args[0] == b"-ERR message 1 no longer exists"
            await in_thread(client.dele, 1)
            await in_thread(client.dele, 2)
        finally:
            reply = await in_thread(client.quit)
        assert reply == b"+OK bye"
        remaining = await stack.store.list_messages(inbox.id)
        assert [m.size for m in remaining] == [len(MESSAGE.replace(b"dots", b"late"))]


async def test_autologout(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",), pop3={"idle_timeout_seconds": 1.0})

        def idle() -> bytes:
            client = login(pop_tls(stack))
            time.sleep(2)
            return client.file.read()

        assert await in_thread(idle) == b"-ERR [SYS/TEMP] autologout, idle for too long\r\n"


async def test_overlong_line_and_bad_input_keep_the_session(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))

        def conversation() -> list[bytes]:
            host, port = stack.addr("pop3", implicit_tls=True)
            context = stack.client_ssl_context()
            with (
                socket.create_connection((host, port), timeout=30) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                reader = tls.makefile("rb")
                reader.readline()
                tls.sendall(b"NOOP " + b"x" * 5000 + b"\r\nBOGUS\r\nCAPA x\r\nQUIT\r\n")
                return [reader.readline() for _ in range(4)]

        assert await in_thread(conversation) == [
            b"-ERR line too long\r\n",
            b"-ERR unknown command\r\n",
            b"-ERR syntax: CAPA takes no arguments\r\n",
            b"+OK bye\r\n",
        ]


async def test_plaintext_pipelined_behind_stls_is_discarded(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",))

        def conversation() -> tuple[bytes, bytes]:
            host, port = stack.addr("pop3")
            with socket.create_connection((host, port), timeout=30) as raw:
                reader = raw.makefile("rb")
                assert reader.readline().startswith(b"+OK")
                # An attacker's injected USER rides in the same packet as STLS.
                raw.sendall(b"STLS\r\nUSER alice@example.test\r\n")
                started = reader.readline()
                context = stack.client_ssl_context()
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"PASS alice-password\r\n")
                    return started, tls.recv(100)

        started, after = await in_thread(conversation)
        assert started == b"+OK begin TLS negotiation\r\n"
        assert after == b"-ERR USER first\r\n"  # the injected USER never counted


async def test_connection_limit_refusal(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",), pop3={"max_connections_per_ip": 1})

        def conversation() -> bytes:
            first = pop_tls(stack)
            host, port = stack.addr("pop3")
            with socket.create_connection((host, port), timeout=30) as second:
                refused = second.makefile("rb").read()
            first.quit()
            return refused

        assert await in_thread(conversation) == (
            b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
        )


async def test_imap_expunge_during_pop3_session(stack_factory: StackFactory) -> None:
    """The same INBOX over IMAP: an IMAP client expunges a message while a
    POP3 session holds its snapshot; RETR of it fails, QUIT still succeeds."""
    with trio.fail_after(60):
        stack = await stack_factory(services=("imap", "pop3"))
        await deliver(stack, MESSAGE)
        await deliver(stack, MESSAGE.replace(b"dots", b"second"))
        pop = await in_thread(lambda: login(pop_tls(stack)))

        def imap_expunge_first() -> None:
            host, port = stack.addr("imap", implicit_tls=True)
            with imaplib.IMAP4_SSL(host, port, ssl_context=stack.client_ssl_context()) as imap:
                imap.login(*ALICE)
                imap.select("INBOX")
                imap.store("1", "+FLAGS", "(\\Deleted)")
                imap.expunge()
                imap.logout()

        await in_thread(imap_expunge_first)
        await trio.sleep(0.5)  # let the change reach the POP3 session's watcher

        def pop_rest() -> tuple[bytes, bytes, bytes]:
            try:
                pop.retr(1)
            except poplib.error_proto as exc:
                gone = bytes(exc.args[0])
            else:
                gone = b"retrieved"
            second = pop.retr(2)[0]
            pop.dele(2)
            return gone, second, pop.quit()

        gone, second, bye = await in_thread(pop_rest)
        assert gone == b"-ERR message 1 no longer exists"
        assert second.startswith(b"+OK ")
        assert bye == b"+OK bye"
        assert (await inbox_of(stack)).messages == 0


async def test_on_postgresql(stack_factory: StackFactory, pg_url: str) -> None:
    """The same retrieval, read-ahead and UPDATE against PostgreSQL."""
    with trio.fail_after(60):
        stack = await stack_factory(services=("pop3",), database={"url": pg_url})
        for n in range(40):  # more than one read-ahead batch
            await deliver(stack, MESSAGE.replace(b"dots", b"pg %d" % n))

        def conversation() -> tuple[list[bytes], int]:
            client = login(pop_tls(stack))
            subjects = []
            for number in range(1, 41):
                lines = client.retr(number)[1]
                subjects.append(next(ln for ln in lines if ln.startswith(b"Subject:")))
                if number % 2:
                    client.dele(number)
            client.quit()
            again = login(pop_tls(stack))
            count = again.stat()[0]
            again.quit()
            return subjects, count

        subjects, count = await in_thread(conversation)
        assert subjects == [b"Subject: pg %d" % n for n in range(40)]
        assert count == 20
