"""Abusive clients must not stop the service for others (each test: seconds).

Slowloris, clients that never read, floods of bad commands and password
guessing each meet a configurable defence that is logged; meanwhile a
well-behaved client, from another loopback address (127.0.0.2...), is served
at once.  Memory stays bounded because every buffer has a limit: a line
(max_line_bytes), the unsent output (send_timeout_seconds), the sessions per
address (max_connections_per_ip) and the throttle's table (throttle_max_entries).
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket

import pytest
import trio

from tests.integration.conftest import StackFactory

# The well-behaved client must be answered within this (the brief's 1 s).
SERVED_WITHIN = 1.0


async def connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """Bytes up to the end of the line holding ``marker`` (or to EOF)."""
    data = b""
    while marker not in data or not data.endswith(b"\r\n"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


async def imap_login_works(port: int, source: str, user: str, password: str) -> None:
    """A normal client from ``source`` logs in within SERVED_WITHIN seconds."""
    with trio.fail_after(SERVED_WITHIN):
        stream = await connect(port, source)
        assert b"* OK" in await read_until(stream, b"\r\n")
        await stream.send_all(f"a1 LOGIN {user} {password}\r\n".encode())
        assert b"a1 OK" in await read_until(stream, b"a1 ")
        await stream.aclose()


async def test_slowloris_holds_only_its_own_slots(stack_factory: StackFactory) -> None:
    stack = await stack_factory(
        services=["imap"],
        imap={"allow_plaintext_login": True, "max_connections_per_ip": 4},
    )
    _, port = stack.addr("imap")
    with trio.fail_after(20):
        slow = [await connect(port) for _ in range(4)]
        for stream in slow:
            await read_until(stream, b"\r\n")
        # One byte per (scaled) second from each, never finishing a line.
        for _ in range(3):
            for stream in slow:
                await stream.send_all(b"a")
            await trio.sleep(0.2)
        # A fifth connection from the same address is refused and logged ...
        extra = await connect(port)
        assert b"BYE [UNAVAILABLE]" in await read_until(extra, b"\r\n")
        # ... while everyone else is served at once.
        await imap_login_works(port, "127.0.0.2", "alice@example.test", "alice-password")
        for stream in slow:
            await stream.aclose()


async def test_endless_line_is_refused_at_the_limit(stack_factory: StackFactory) -> None:
    # Memory bound for a slowloris that never ends its line: the server keeps
    # at most max_line_bytes of it, refuses the command and reads on.
    stack = await stack_factory(
        services=["imap"], imap={"allow_plaintext_login": True, "max_line_bytes": 1024}
    )
    _, port = stack.addr("imap")
    with trio.fail_after(10):
        stream = await connect(port)
        await read_until(stream, b"\r\n")
        await stream.send_all(b"a1 NOOP " + b"x" * 100_000)
        assert b"BAD Command line too long" in await read_until(stream, b"too long")
        await stream.send_all(b"\r\na2 NOOP\r\n")
        assert b"a2 OK" in await read_until(stream, b"a2 ")


async def test_client_that_never_reads_is_cut_off(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mailstack")
    stack = await stack_factory(
        services=["imap"], imap={"allow_plaintext_login": True, "send_timeout_seconds": 1.0}
    )
    _, port = stack.addr("imap")
    with trio.fail_after(30):
        sock = trio.socket.socket()
        # A small receive window so the server's output backs up quickly.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        greedy = trio.SocketStream(sock)
        commands = b"x CAPABILITY\r\n" * 40_000  # about 10 MB of replies

        async def send_without_reading() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await greedy.send_all(commands)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_without_reading)
            await trio.sleep(3)
            await imap_login_works(port, "127.0.0.2", "bob@example.test", "bob-password")
            nursery.cancel_scope.cancel()
        received = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while chunk := await greedy.receive_some(1 << 20):
                received += chunk
        # Closed by the server long before all the replies were sent.
        assert received.count(b"x OK") < 40_000
    assert "send_timeout_seconds" in caplog.text


async def test_bad_command_flood_ends_the_session(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mailstack")
    stack = await stack_factory(
        services=["imap", "smtp"], imap={"allow_plaintext_login": True, "max_bad_commands": 5}
    )
    _, imap_port = stack.addr("imap")
    _, smtp_port = stack.addr("smtp")
    with trio.fail_after(10):
        flood = await connect(imap_port)
        await flood.send_all(b"\xff garbage\r\n" * 1000)
        received = await read_until(flood, b"BYE")
        assert received.count(b"BAD") == 5 and b"* BYE Too many bad commands" in received
        assert await flood.receive_some(1024) == b""  # closed
        # SMTP's equivalent is max_errors (default 10): 421 and close.
        smtp = await connect(smtp_port)
        await smtp.send_all(b"BOGUS\r\n" * 50)
        assert b"421" in await read_until(smtp, b"421")
        await imap_login_works(imap_port, "127.0.0.2", "alice@example.test", "alice-password")
    assert "max_bad_commands" in caplog.text


async def guess(port: int, source: str, user: str, password: str) -> bytes:
    stream = await connect(port, source)
    await read_until(stream, b"\r\n")
    await stream.send_all(f"g LOGIN {user} {password}\r\n".encode())
    reply = await read_until(stream, b"g ")
    await stream.aclose()
    return reply


BRUTE_FORCE_AUTH = {
    "free_failures": 2,
    "delay_base_seconds": 0.05,
    "delay_max_seconds": 0.1,
    "lockout_failures": 5,
    "lockout_seconds": 60.0,
}


async def test_password_guessing_from_one_address(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailstack")
    stack = await stack_factory(
        services=["imap"], imap={"allow_plaintext_login": True}, auth=BRUTE_FORCE_AUTH
    )
    _, port = stack.addr("imap")
    with trio.fail_after(20):
        for attempt in range(8):
            reply = await guess(port, "127.0.0.1", "bob@example.test", f"wrong-{attempt}")
            assert b"g NO" in reply
        # Locked out: even the right password is refused from this address.
        assert b"g NO" in await guess(port, "127.0.0.1", "alice@example.test", "alice-password")
        # Another address and another account are served at once.
        await imap_login_works(port, "127.0.0.2", "alice@example.test", "alice-password")
    assert "locked out" in caplog.text


async def test_password_guessing_spread_over_accounts(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailstack")
    stack = await stack_factory(
        services=["imap"], imap={"allow_plaintext_login": True}, auth=BRUTE_FORCE_AUTH
    )
    _, port = stack.addr("imap")
    with trio.fail_after(20):
        # One wrong guess per account (real and invented) from one address:
        # no account reaches its own limit, the address does.
        for n in range(8):
            await guess(port, "127.0.0.3", f"user{n}@example.test", "guess")
        assert b"g NO" in await guess(port, "127.0.0.3", "bob@example.test", "bob-password")
        await imap_login_works(port, "127.0.0.4", "bob@example.test", "bob-password")
    assert "locked out" in caplog.text


async def test_account_limit_zero_means_unlimited(stack_factory: StackFactory) -> None:
    # Regression (found by bench/scale_bench.py): max_connections_per_account
    # = 0 refused every login instead of meaning "no limit" like the others.
    stack = await stack_factory(
        services=["imap"], imap={"allow_plaintext_login": True, "max_connections_per_account": 0}
    )
    _, port = stack.addr("imap")
    await imap_login_works(port, "127.0.0.1", "alice@example.test", "alice-password")


async def test_pop3_bad_command_flood_ends_the_session(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mailstack")
    stack = await stack_factory(services=["pop3"], pop3={"max_bad_commands": 3})
    _, port = stack.addr("pop3")
    with trio.fail_after(10):
        flood = await connect(port)
        await flood.send_all(b"BOGUS\r\n" * 100)
        received = await read_until(flood, b"too many bad commands")
        assert received.count(b"-ERR unknown command") == 3
        assert await flood.receive_some(1024) == b""  # closed
    assert "max_bad_commands" in caplog.text


async def test_out_of_file_descriptors_pauses_accepting_then_recovers(
    stack_factory: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The process runs out of descriptors while connections wait in the
    # kernel's queue: the accept loop logs, pauses (no busy loop) and takes
    # every waiting connection once descriptors are free again.
    caplog.set_level(logging.ERROR, "mailstack")
    stack = await stack_factory(services=["smtp"])
    host, port = stack.addr("smtp")
    paused = trio.Event()

    class PauseSeen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "accept failed" in record.getMessage():
                paused.set()  # logged from the event loop's own thread

    seen = PauseSeen()
    logging.getLogger("mailstack.net").addHandler(seen)
    waiting = 20
    clients = [socket.socket() for _ in range(waiting)]  # descriptors taken now
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    try:
        with trio.fail_after(30):
            # Room for a few accepts only (connect itself needs no descriptor).
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 3, hard))
            for client in clients:
                client.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    client.connect((host, port))
            await paused.wait()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            greetings = 0
            for client in clients:
                await trio.lowlevel.wait_readable(client)
                if client.recv(512).startswith(b"220 "):
                    greetings += 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        logging.getLogger("mailstack.net").removeHandler(seen)
        for client in clients:
            client.close()
    assert greetings == waiting
    assert "Too many open files" in caplog.text
