"""SMTP against the real server with Python's smtplib over real TLS.

Clients run in threads; the stack (MX + submission + the real SQLite store)
runs in the test's nursery via ``stack_factory``.  Every accepted message is
read back from the store and compared byte for byte, minus the trace and
submission headers the server put on top.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio

from tests.integration.conftest import Stack, StackFactory

T = TypeVar("T")

MESSAGE = (
    b"From: bob@example.test\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: test\r\n"
    b"Date: Sun, 29 Nov 2026 03:00:00 +0000\r\n"
    b"Message-ID: <t1@example.test>\r\n"
    b"\r\n"
    b"first line\r\n"
    b".a line that starts with a dot\r\n"
    b"\xc3\xa9 8-bit text\r\n"
    b"last line\r\n"
)


TRANSACTION = (
    b"EHLO a.example\r\nMAIL FROM:<a@r.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


async def messages_of(stack: Stack, address: str) -> list[bytes]:
    account = await stack.store.get_account(address)
    assert account is not None
    inbox = await stack.store.get_mailbox(account.id, "INBOX")
    assert inbox is not None
    records = await stack.store.list_messages(inbox.id)
    return [await stack.store.read_content(r.content_id) for r in records]


def strip_added(raw: bytes, names: tuple[bytes, ...] = (b"Return-Path", b"Received")) -> bytes:
    """Remove the header fields the server prepended (with continuations)."""
    lines = raw.split(b"\r\n")
    index = 0
    while index < len(lines) and lines[index].split(b":", 1)[0] in names:
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
    return b"\r\n".join(lines[index:])


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


async def test_mx_delivers_to_account_alias_and_catch_all(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        await stack.store.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
        await stack.store.add_alias("@example.test", ["bob@example.test"])
        host, port = stack.addr("smtp")

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.ehlo("sender.example")
                return client.sendmail(
                    "someone@remote.example",
                    [
                        "alice@example.test",
                        "team@example.test",
                        "whoever@example.test",
                        "Alice@Example.TEST",
                    ],
                    MESSAGE,
                )

        refused = await in_thread(send)
        assert refused == {}
        alice = await messages_of(stack, "alice@example.test")
        bob = await messages_of(stack, "bob@example.test")
        # One copy per final mailbox although alice was named three ways.
        assert len(alice) == 1 and len(bob) == 1
        for raw in (alice[0], bob[0]):
            assert strip_added(raw) == MESSAGE
            head = header_block(raw)
            assert head.startswith(b"Return-Path: <someone@remote.example>\r\n")
            assert b"\r\nReceived: from sender.example ([127.0.0.1])\r\n" in head
            assert b"with ESMTP id" in head


async def test_mx_refuses_unknown_users_and_relaying(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")

        def probe() -> list[tuple[int, bytes]]:
            results = []
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.ehlo("sender.example")
                client.mail("x@remote.example")
                for rcpt in (
                    "nobody@example.test",
                    "victim@elsewhere.example",
                    "@example.test:victim@elsewhere.example",
                    "victim%elsewhere.example@example.test",
                    '"victim@elsewhere.example"@example.test',
                    "victim@elsewhere.example@example.test",
                    "victim@[192.0.2.1]",
                ):
                    results.append(client.docmd("RCPT", f"TO:<{rcpt}>"))
                client.rset()
            return results

        results = await in_thread(probe)
        codes = [(code, text.split(b" ")[0]) for code, text in results]
        assert codes[0] == (550, b"5.1.1")
        for code, enhanced in codes[1:6]:
            assert code >= 500 and enhanced in (b"5.7.1", b"5.1.3"), (code, enhanced)
        assert codes[1] == (550, b"5.7.1") and codes[2] == (550, b"5.7.1")
        assert codes[6] == (550, b"5.7.1")
        assert await messages_of(stack, "alice@example.test") == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_submission_starttls_auth(stack_factory: StackFactory, mechanism: str) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("submission",))
        host, port = stack.addr("submission")
        context = stack.client_ssl_context()
        body = MESSAGE.replace(
            b"Date: Sun, 29 Nov 2026 03:00:00 +0000\r\nMessage-ID: <t1@example.test>\r\n", b""
        )

        def send() -> tuple[dict[str, tuple[int, bytes]], bytes]:
            with smtplib.SMTP(host, port, local_hostname="client.example", timeout=30) as client:
                client.starttls(context=context)
                client.ehlo()
                client.user, client.password = "alice@example.test", "alice-password"
                code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
                assert code == 235
                refused = client.sendmail("alice@example.test", ["bob@example.test"], body)
                code, text = client.rcpt("bob@example.test")
                return refused, text

        refused, _ = await in_thread(send)
        assert refused == {}
        (raw,) = await messages_of(stack, "bob@example.test")
        head = header_block(raw)
        assert b"with ESMTPSA" in head and b"(authenticated as alice@example.test)" in head
        assert b"(using TLSv1.3 with cipher" in head
        # RFC 6409 8.3: the server added Date and Message-ID.
        assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head
        assert strip_added(raw, (b"Return-Path", b"Received", b"Date", b"Message-ID")) == body


async def test_submission_implicit_tls(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("submission",))
        host, port = stack.addr("submission", implicit_tls=True)
        context = stack.client_ssl_context()

        def send() -> tuple[bytes, dict[str, tuple[int, bytes]]]:
            with smtplib.SMTP_SSL(host, port, context=context, timeout=30) as client:
                _code, features = client.ehlo("client.example")
                client.login("bob@example.test", "bob-password")
                return features, client.sendmail(
                    "bob@example.test", ["alice@example.test"], MESSAGE
                )

        features, refused = await in_thread(send)
        assert b"AUTH PLAIN LOGIN" in features and b"STARTTLS" not in features
        assert refused == {}
        (raw,) = await messages_of(stack, "alice@example.test")
        assert strip_added(raw) == MESSAGE


async def test_submission_policy(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("submission",))
        await stack.store.add_alias("alias-of-alice@example.test", ["alice@example.test"])
        host, port = stack.addr("submission")
        context = stack.client_ssl_context()

        def run() -> dict[str, tuple[int, Any]]:
            out: dict[str, tuple[int, Any]] = {}
            with smtplib.SMTP(host, port, local_hostname="client.example", timeout=30) as client:
                client.ehlo()
                assert not client.has_extn("auth")
                out["auth-before-tls"] = client.docmd(
                    "AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1wYXNzd29yZA=="
                )
                out["mail-before-tls"] = client.mail("alice@example.test")
                client.starttls(context=context)
                client.ehlo()
                out["mail-before-auth"] = client.mail("alice@example.test")
                try:
                    client.login("alice@example.test", "wrong-password")
                except smtplib.SMTPAuthenticationError as exc:
                    out["bad-password"] = (exc.smtp_code, exc.smtp_error)
                client.login("alice@example.test", "alice-password")
                out["foreign-sender"] = client.mail("bob@example.test")
                out["alias-sender"] = client.mail("alias-of-alice@example.test")
                out["remote-rcpt"] = client.rcpt("friend@remote.example")
                out["local-rcpt"] = client.rcpt("bob@example.test")
            return out

        out = await in_thread(run)
        assert out["auth-before-tls"][0] == 538
        assert out["mail-before-tls"][0] == 530
        assert out["mail-before-auth"][0] == 530
        assert out["bad-password"][0] == 535
        assert out["foreign-sender"][0] == 553 and out["foreign-sender"][1].startswith(b"5.7.1")
        assert out["alias-sender"][0] == 250
        assert (
            out["remote-rcpt"][0] == 550 and b"relaying is not configured" in out["remote-rcpt"][1]
        )
        assert out["local-rcpt"][0] == 250


def raw_session(
    host: str, port: int, script: list[bytes], *, read_until: bytes = b"", half_close: bool = True
) -> bytes:
    """Send each chunk, collecting what the server says until it closes or
    ``read_until`` has been seen."""
    received = b""
    with socket.create_connection((host, port), timeout=30) as sock:
        received += sock.recv(4096)
        for chunk in script:
            sock.sendall(chunk)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
            if read_until and read_until in received:
                break
    return received


async def test_starttls_injection_is_not_executed(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")
        context = stack.client_ssl_context()

        def attack() -> tuple[bytes, bytes]:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.recv(4096)
                sock.sendall(b"EHLO evil.example\r\n")
                sock.recv(4096)
                # One packet: STARTTLS plus a command the attacker hopes runs
                # inside the TLS session (CVE-2011-0411).
                sock.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n")
                reply = sock.recv(4096)
                tls = context.wrap_socket(sock, server_hostname="localhost")
                tls.sendall(b"RCPT TO:<alice@example.test>\r\n")
                after = tls.recv(4096)
                tls.sendall(b"QUIT\r\n")
                tls.recv(4096)
                return reply, after

        reply, after = await in_thread(attack)
        assert reply.startswith(b"220 2.0.0")
        # Had MAIL run, RCPT would be accepted; it was discarded, so EHLO is due.
        assert after.startswith(b"503 5.5.1")


async def test_vanished_client_mid_data_stores_nothing(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")

        def vanish() -> None:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.recv(4096)
                sock.sendall(TRANSACTION)
                received = b""
                while b"354" not in received:
                    received += sock.recv(4096)
                sock.sendall(b"Subject: half\r\n\r\nhalf a message\r\n")

        await in_thread(vanish)

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(host, port, timeout=30) as client:
                return client.sendmail("a@r.example", ["alice@example.test"], MESSAGE)

        assert await in_thread(send) == {}
        (raw,) = await messages_of(stack, "alice@example.test")
        assert strip_added(raw) == MESSAGE


async def test_oversized_line_and_size_limit(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",), smtp={"max_message_bytes": 20_000})
        host, port = stack.addr("smtp")

        def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.ehlo("a.example")
                assert client.esmtp_features["size"] == "20000"
                out["long-command"] = client.docmd("NOOP", "x" * 2000)
                out["declared"] = client.mail("a@r.example", ["SIZE=20001"])
                client.rset()
                for name, body in (
                    ("long-text-line", b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n"),
                    ("too-big", b"Subject: x\r\n\r\n" + (b"z" * 98 + b"\r\n") * 300),
                ):
                    client.mail("a@r.example")
                    client.rcpt("alice@example.test")
                    out[name] = client.data(body)
                out["still-serving"] = client.noop()
            return out

        out = await in_thread(run)
        assert out["long-command"][0] == 500
        assert out["declared"][0] == 552
        assert out["long-text-line"][0] == 500 and out["long-text-line"][1].startswith(b"5.5.6")
        assert out["too-big"][0] == 552 and out["too-big"][1].startswith(b"5.3.4")
        assert out["still-serving"][0] == 250
        assert await messages_of(stack, "alice@example.test") == []


async def test_smuggling_attempt_rejected_without_second_message(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")
        script = [
            TRANSACTION,
            b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<admin@example.test>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\nQUIT\r\n",
        ]
        out = await in_thread(lambda: raw_session(host, port, script))
        assert b"554 5.6.11" in out and b"221 2.0.0" in out
        assert await messages_of(stack, "alice@example.test") == []
        assert await messages_of(stack, "bob@example.test") == []


async def test_connection_limit_per_ip(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",), smtp={"max_connections_per_ip": 1})
        host, port = stack.addr("smtp")

        def two() -> bytes:
            with socket.create_connection((host, port), timeout=30) as first:
                assert first.recv(4096).startswith(b"220 ")
                with socket.create_connection((host, port), timeout=30) as second:
                    return second.recv(4096)

        assert (await in_thread(two)).startswith(b"421 4.7.0")


async def test_command_timeout_closes_with_421(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",), smtp={"command_timeout_seconds": 0.5})
        host, port = stack.addr("smtp")
        out = await in_thread(
            lambda: raw_session(host, port, [], read_until=b"421", half_close=False)
        )
        assert b"421 4.4.2" in out


async def test_command_timeout_under_tls_still_says_421(stack_factory: StackFactory) -> None:
    # The timeout interrupts the wait on the socket beneath TLS: the TLS
    # layer stays usable, so the 421 goes out encrypted before the close.
    with trio.fail_after(60):
        stack = await stack_factory(
            services=("submission",), submission={"command_timeout_seconds": 0.5}
        )
        host, port = stack.addr("submission")
        context = stack.client_ssl_context()

        def idle_after_starttls() -> tuple[int, bytes]:
            with smtplib.SMTP(host, port, local_hostname="client.example", timeout=30) as client:
                client.starttls(context=context)
                client.ehlo()
                return client.getreply()  # nothing sent: only the server speaks

        code, text = await in_thread(idle_after_starttls)
        assert code == 421 and text.startswith(b"4.4.2")


async def test_command_timeout_follows_the_phase(stack_factory: StackFactory) -> None:
    # RFC 5321 4.5.3.2: each wait gets its phase's timeout.  Commands that
    # keep coming keep the session open past one command timeout, and after
    # a message (the longer data timeout) an idle client gets the command
    # timeout again, not the data timeout.
    with trio.fail_after(60):
        stack = await stack_factory(
            services=("smtp",), smtp={"command_timeout_seconds": 0.6, "data_timeout_seconds": 30}
        )
        host, port = stack.addr("smtp")

        def session() -> tuple[bytes, float]:
            with socket.create_connection((host, port), timeout=30) as sock:
                sock.recv(4096)
                for _ in range(6):  # 1.8 s of commands, 0.3 s apart
                    sock.sendall(b"NOOP\r\n")
                    assert sock.recv(4096).startswith(b"250 ")
                    time.sleep(0.3)
                sock.sendall(b"EHLO a.example\r\nMAIL FROM:<a@r.example>\r\n")
                sock.sendall(b"RCPT TO:<alice@example.test>\r\nDATA\r\n")
                received = b""
                while b"354 " not in received:
                    received += sock.recv(4096)
                sock.sendall(MESSAGE + b".\r\n")
                while b"2.0.0" not in received.rsplit(b"354 ", 1)[1]:
                    received += sock.recv(4096)
                idle_since = time.monotonic()
                while b"421 " not in received:
                    chunk = sock.recv(4096)
                    assert chunk, received
                    received += chunk
                return received, time.monotonic() - idle_since

        received, idle = await in_thread(session)
        assert b"421 4.4.2" in received
        assert 0.5 < idle < 5, idle
        assert len(await messages_of(stack, "alice@example.test")) == 1


async def test_graceful_stop_says_421_between_commands(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")
        connected = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def idle_client() -> bytes:
            with socket.create_connection((host, port), timeout=30) as sock:
                received = sock.recv(4096)
                sock.sendall(b"EHLO a.example\r\n")
                while b"250 " not in received:
                    received += sock.recv(4096)
                trio.from_thread.run_sync(connected.set, trio_token=token)
                while True:
                    data = sock.recv(4096)
                    if not data:
                        return received
                    received += data

        async with trio.open_nursery() as nursery:
            result: list[bytes] = []

            async def client() -> None:
                result.append(await in_thread(idle_client))

            nursery.start_soon(client)
            await connected.wait()
            stack.stop.set()
        assert result[0].endswith(b"421 4.3.2 service shutting down, closing connection\r\n")
        await stack.stopped.wait()


async def test_bdat_chunks_and_smtputf8_delivered(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        host, port = stack.addr("smtp")
        first, second = MESSAGE[:50], MESSAGE[50:]
        script = [
            b"EHLO a.example\r\n"
            b"MAIL FROM:<\xc3\xa9l\xc3\xa8ve@r.example> SMTPUTF8 BODY=8BITMIME\r\n"
            b"RCPT TO:<alice@example.test>\r\n",
            f"BDAT {len(first)}\r\n".encode() + first,
            f"BDAT {len(second)} LAST\r\n".encode() + second,
            b"QUIT\r\n",
        ]
        out = await in_thread(lambda: raw_session(host, port, script))
        assert out.count(b"250 2.0.0") == 2 and b"221 2.0.0" in out
        (raw,) = await messages_of(stack, "alice@example.test")
        assert strip_added(raw) == MESSAGE
        assert raw.startswith("Return-Path: <élève@r.example>\r\n".encode())
        assert b" with UTF8SMTP id " in raw


async def test_over_quota_recipient_gets_452_others_delivered(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        await stack.store.set_quota("alice@example.test", None, 1)
        host, port = stack.addr("smtp")

        def send() -> list[dict[str, tuple[int, bytes]]]:
            results = []
            with smtplib.SMTP(host, port, timeout=30) as client:
                for _ in range(2):
                    results.append(
                        client.sendmail(
                            "a@r.example", ["alice@example.test", "bob@example.test"], MESSAGE
                        )
                    )
            return results

        first, second = await in_thread(send)
        assert first == {}
        # RFC 5321 4.2.5 / RFC 3463 4.2.2: a temporary refusal for the full mailbox only.
        assert second["alice@example.test"][0] == 452
        assert second["alice@example.test"][1].startswith(b"4.2.2")
        assert len(await messages_of(stack, "alice@example.test")) == 1
        assert len(await messages_of(stack, "bob@example.test")) == 2


async def test_over_quota_permanent_per_config(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",), smtp={"over_quota": "permanent"})
        await stack.store.set_quota("alice@example.test", None, 1)
        host, port = stack.addr("smtp")

        def send(recipients: list[str]) -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(host, port, timeout=30) as client:
                return client.sendmail("a@r.example", recipients, MESSAGE)

        assert await in_thread(send, ["alice@example.test"]) == {}
        refused = await in_thread(send, ["alice@example.test", "bob@example.test"])
        # RFC 3463 5.2.2: a permanent refusal, for the full mailbox only.
        assert refused["alice@example.test"][0] == 552
        assert refused["alice@example.test"][1].startswith(b"5.2.2")
        assert len(await messages_of(stack, "alice@example.test")) == 1
        assert len(await messages_of(stack, "bob@example.test")) == 1
        # Bob is under quota at RCPT, but the message itself does not fit:
        # refused at the end of DATA, permanently as he is its one recipient.
        bob = await stack.store.get_account("bob@example.test")
        assert bob is not None
        used = (await stack.store.quota_usage(bob.id)).bytes_used
        await stack.store.set_quota("bob@example.test", used + 1, None)
        try:
            await in_thread(send, ["bob@example.test"])
        except smtplib.SMTPDataError as exc:
            assert exc.smtp_code == 552 and exc.smtp_error.startswith(b"5.2.2")
        else:
            raise AssertionError("delivered over quota")
        assert len(await messages_of(stack, "bob@example.test")) == 1


async def test_postmaster_without_domain_is_accepted(stack_factory: StackFactory) -> None:
    with trio.fail_after(60):
        stack = await stack_factory(services=("smtp",))
        await stack.store.add_alias("postmaster@example.test", ["bob@example.test"])
        host, port = stack.addr("smtp")

        def send() -> tuple[int, bytes]:
            with smtplib.SMTP(host, port, timeout=30) as client:
                client.ehlo("a.example")
                client.mail("")
                reply = client.docmd("RCPT", "TO:<Postmaster>")
                client.data(MESSAGE)
                return reply

        assert (await in_thread(send))[0] == 250
        (raw,) = await messages_of(stack, "bob@example.test")
        assert raw.startswith(b"Return-Path: <>\r\n") and strip_added(raw) == MESSAGE


async def test_writer_process_delivers_mx_and_submission_mail(
    stack_factory: StackFactory,
) -> None:
    """[database] writer_process: the same bytes land, committed by the child."""
    with trio.fail_after(90):
        stack = await stack_factory(
            services=("smtp", "submission"), database={"writer_process": True}
        )
        mx_host, mx_port = stack.addr("smtp")
        sub_host, sub_port = stack.addr("submission")
        context = stack.client_ssl_context()

        def send_mx(number: int) -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(mx_host, mx_port, timeout=30) as client:
                body = MESSAGE.replace(b"Subject: test", b"Subject: mx %d" % number)
                return client.sendmail("someone@remote.example", ["alice@example.test"], body)

        def submit() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(sub_host, sub_port, timeout=30) as client:
                client.starttls(context=context)
                client.login("bob@example.test", "bob-password")
                return client.sendmail("bob@example.test", ["alice@example.test"], MESSAGE)

        # The first message starts the child (the thread writer takes it).
        await in_thread(send_mx, 0)
        with trio.fail_after(30):
            while True:
                if stack.store.writer_process_pid is not None:
                    break  # the child is up
                await trio.sleep(0.05)
        async with trio.open_nursery() as nursery:
            for number in range(1, 20):
                nursery.start_soon(in_thread, send_mx, number)
            nursery.start_soon(in_thread, submit)
        received = await messages_of(stack, "alice@example.test")
        assert len(received) == 21
        bodies = sorted(strip_added(raw) for raw in received)
        expected = sorted(
            [MESSAGE.replace(b"Subject: test", b"Subject: mx %d" % n) for n in range(20)]
            + [MESSAGE]
        )
        assert bodies == expected
        assert any(b"with ESMTPSA" in header_block(raw) for raw in received)
