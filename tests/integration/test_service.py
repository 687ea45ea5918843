"""service.run end to end: start, greet, SIGHUP reload, SIGTERM drain, sd_notify.

The lifecycle tests use a minimal line-echo service registered under the
``websocket`` slot and built on net.serve_endpoints exactly like the real
protocol servers, so run()'s own behaviour is tested whatever protocol
servers already exist; the first test exercises every real one.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from mailstack import net, service
from mailstack.service import ServiceContext
from tests.support.tls import served_dns_names

from .conftest import Stack, StackFactory

SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
# What each real service says first (RFC 5321 4.2, RFC 9051 7.1.1, RFC 1939 4).
GREETINGS = {"smtp": b"220", "submission": b"220", "imap": b"* OK", "pop3": b"+OK"}


async def echo_session(stream: trio.abc.Stream, peer: net.Peer) -> None:
    while line := await net.receive_some(stream, 1024):
        if not await net.send_all(stream, line):
            return


async def serve_echo(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """The smallest service: websocket's listen (plain) and, for the TLS
    tests, imap's tls_listen list reused as implicit TLS endpoints."""
    limits = net.ConnectionLimits(0, 0)
    refuse = partial(lambda peer: b"busy\r\n")
    async with trio.open_nursery() as nursery:
        bound: list[net.Bound] = await nursery.start(
            partial(
                net.serve_endpoints,
                "echo",
                echo_session,
                ctx.config.websocket.listen,
                tls=None,
                limits=limits,
                refuse=refuse,
            )
        )
        bound += await nursery.start(
            partial(
                net.serve_endpoints,
                "echo",
                echo_session,
                ctx.config.imap.tls_listen,
                tls=ctx.tls,
                limits=limits,
                refuse=refuse,
            )
        )
        task_status.started(bound)


@pytest.fixture
def echo_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(service.SERVICES, "websocket", f"{__name__}:serve_echo")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        yield sock


def pending_datagrams(sock: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096))
        except BlockingIOError:
            return messages


def echo_addr(stack: Stack, implicit_tls: bool = False) -> tuple[str, int]:
    return stack.addr("echo", implicit_tls)


async def echo_stack(stack_factory: StackFactory, **kwargs: object) -> Stack:
    from mailstack.config import Endpoint

    loopback = (Endpoint("127.0.0.1", 0),)
    return await stack_factory(
        services=("websocket",),
        websocket={"listen": loopback},
        imap={"tls_listen": loopback},
        **kwargs,
    )


async def test_every_available_service_starts_greets_and_stops(
    stack_factory: StackFactory,
) -> None:
    available = [n for n in GREETINGS if n in service.available_services()]
    if not available:
        pytest.skip("no protocol server built yet")
    with trio.fail_after(30):
        # A grace period longer than fail_after: with no session open, the
        # stop must not wait it out (every service, the store's writer and
        # watcher included, ends as soon as its listeners are closed).
        stack = await stack_factory(services=available, grace_seconds=60.0)
        for name in available:
            for implicit_tls in (False, True):
                try:
                    host, port = stack.addr(name, implicit_tls)
                except LookupError:
                    assert name == "smtp" and implicit_tls  # the MX has no implicit TLS
                    continue
                tcp = await trio.open_tcp_stream(host, port)
                stream: trio.abc.Stream = tcp
                if implicit_tls:
                    stream = trio.SSLStream(
                        tcp, stack.client_ssl_context(), server_hostname="localhost"
                    )
                greeting = await stream.receive_some(1024)
                assert greeting.startswith(GREETINGS[name]), (name, greeting)
                await stream.aclose()
        stack.stop.set()
        await stack.stopped.wait()
        for b in stack.bound:
            with pytest.raises(OSError):
                await trio.open_tcp_stream(b.host, b.port)


async def read_certificate_names(stack: Stack) -> list[str]:
    host, port = echo_addr(stack, implicit_tls=True)
    return await served_dns_names(host, port, stack.client_ssl_context())


@pytest.mark.usefixtures("echo_service")
async def test_sighup_serves_new_certificate_to_next_client(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(20):
        stack = await echo_stack(stack_factory, handle_signals=True)
        assert "reloaded.test" not in await read_certificate_names(stack)
        stack.reissue_certificate("localhost", "127.0.0.1", "reloaded.test")
        os.kill(os.getpid(), signal.SIGHUP)
        # The reload runs in a worker thread after the signal is delivered.
        for _ in range(100):
            if "reloaded.test" in await read_certificate_names(stack):
                break
            await trio.sleep(0.05)
        else:
            pytest.fail("certificate was not reloaded after SIGHUP")
        assert not stack.stopped.is_set()


@pytest.mark.usefixtures("echo_service")
async def test_sigterm_closes_listeners_then_waits_for_sessions(
    stack_factory: StackFactory, notify_socket: socket.socket
) -> None:
    with trio.fail_after(20):
        stack = await echo_stack(stack_factory, handle_signals=True, grace_seconds=10.0)
        assert b"READY=1\nSTATUS=serving websocket" in pending_datagrams(notify_socket)
        host, port = echo_addr(stack)
        session = await trio.open_tcp_stream(host, port)
        await session.send_all(b"before\r\n")
        assert await session.receive_some(100) == b"before\r\n"

        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            try:
                probe = await trio.open_tcp_stream(host, port)
            except OSError:
                break
            await probe.aclose()
            await trio.sleep(0.05)
        else:
            pytest.fail("listener still open after SIGTERM")
        assert b"STOPPING=1\nSTATUS=stopping" in pending_datagrams(notify_socket)
        # The open session keeps working during the grace period.
        await session.send_all(b"during drain\r\n")
        assert await session.receive_some(100) == b"during drain\r\n"
        assert not stack.stopped.is_set()
        await session.aclose()
        await stack.stopped.wait()


@pytest.mark.usefixtures("echo_service")
async def test_grace_period_cancels_sessions_that_do_not_end(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(20):
        stack = await echo_stack(stack_factory, grace_seconds=0.3)
        session = await trio.open_tcp_stream(*echo_addr(stack))
        await session.send_all(b"x")
        assert await session.receive_some(10) == b"x"
        start = trio.current_time()
        stack.stop.set()
        await stack.stopped.wait()
        assert 0.2 < trio.current_time() - start < 5
        # The server closed the idle session when the grace period ran out.
        assert await session.receive_some(10) == b""


@pytest.mark.usefixtures("echo_service")
async def test_second_sigterm_stops_at_once(stack_factory: StackFactory) -> None:
    with trio.fail_after(20):
        stack = await echo_stack(stack_factory, handle_signals=True, grace_seconds=60.0)
        session = await trio.open_tcp_stream(*echo_addr(stack))
        await session.send_all(b"x")
        assert await session.receive_some(10) == b"x"
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(0.2)
        assert not stack.stopped.is_set()  # waiting for the session
        os.kill(os.getpid(), signal.SIGINT)
        await stack.stopped.wait()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_context_is_tls12_or_newer(stack_factory: StackFactory) -> None:
    """Implicit TLS listeners refuse TLS 1.1 clients (RFC 8996).  The client
    runs at OpenSSL security level 0, so it would do TLS 1.1 if the server let it."""
    available = [n for n in ("imap", "pop3", "submission") if n in service.available_services()]
    if not available:
        pytest.skip("no implicit-TLS protocol server built yet")
    with trio.fail_after(20):
        stack = await stack_factory(services=available[:1])
        host, port = stack.addr(available[0], implicit_tls=True)
        old = stack.client_ssl_context()
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        tcp = await trio.open_tcp_stream(host, port)
        client = trio.SSLStream(tcp, old, server_hostname="localhost")
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()


async def test_mailstack_serve_process_reports_ready_and_stops_on_sigterm(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """The real command: `mailstack serve pop3` prints its listeners, tells
    systemd READY=1, logs one-line records and exits 0 after SIGTERM."""
    if "pop3" not in service.available_services():
        pytest.skip("pop3 not built yet")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config_file = tmp_path / "mailstack.toml"
    config_file.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f'[tls]\ncert_file = "{tmp_path / "cert.pem"}"\nkey_file = "{tmp_path / "key.pem"}"\n'
        '[pop3]\nlisten = ["127.0.0.1:0"]\n'
        '[logging]\nlevel = "info"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MAILSTACK_CONFIG", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "mailstack", "--config", str(config_file)]
    with trio.fail_after(60):
        upgrade = await trio.run_process([*command, "db", "upgrade"], env=env, capture_stdout=True)
        assert upgrade.returncode == 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(tmp_path / "notify"))
            env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
            process = await trio.lowlevel.open_process(
                [*command, "serve", "pop3"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert process.stdout is not None and process.stderr is not None
            try:
                stdout = b""
                while b"\n" not in stdout:
                    chunk = await process.stdout.receive_some(1024)
                    assert chunk, "serve exited before reporting its listeners"
                    stdout += chunk
                line = stdout.decode().splitlines()[0]
                assert line.startswith("listening: pop3 tcp://127.0.0.1:"), line
                port = int(line.rsplit(":", 1)[1])
                notify.setblocking(False)
                await trio.lowlevel.wait_readable(notify)
                assert notify.recv(4096).startswith(b"READY=1\nSTATUS=serving pop3")
                client = await trio.open_tcp_stream("127.0.0.1", port)
                assert (await client.receive_some(1024)).startswith(b"+OK")
                await client.aclose()
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            stderr = b""
            while chunk := await process.stderr.receive_some(65536):
                stderr += chunk
    log_lines = stderr.decode().splitlines()
    assert any(" INFO mailstack.service listening: pop3 tcp://" in x for x in log_lines)
    assert any(" INFO mailstack.service stopped" in x for x in log_lines)
    line_format = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ [\w.]+ ")
    assert log_lines
    assert all(line_format.match(x) for x in log_lines), log_lines


def pop3_message_count(stack: Stack, address: str) -> int:
    host, port = stack.addr("pop3", implicit_tls=True)
    client = poplib.POP3_SSL(host, port, context=stack.client_ssl_context(), timeout=30)
    try:
        client.user(address)
        client.pass_(stack.accounts[address])
        count, _size = client.stat()
    finally:
        client.quit()
    return count


async def test_two_front_ends_share_one_postgresql_store(
    stack_factory: StackFactory, pg_url: str
) -> None:
    """DESIGN.md user 3: several front-end processes against one PostgreSQL."""
    if "pop3" not in service.available_services():
        pytest.skip("pop3 not built yet")
    with trio.fail_after(60):
        first = await stack_factory(services=("pop3",), database={"url": pg_url})
        second = await stack_factory(services=("pop3",), database={"url": pg_url})
        assert first.addr("pop3") != second.addr("pop3")
        alice = await first.store.get_account("alice@example.test")
        assert alice is not None
        raw = b"From: bob@example.test\r\nSubject: shared\r\n\r\nvia the first front end\r\n"
        await first.store.deliver([alice.id], raw)
        count = await trio.to_thread.run_sync(pop3_message_count, second, "alice@example.test")
        assert count == 1
        await second.store.deliver([alice.id], raw)
        count = await trio.to_thread.run_sync(pop3_message_count, first, "alice@example.test")
        assert count == 2


@pytest.mark.usefixtures("echo_service")
async def test_watchdog_pings_while_serving(
    stack_factory: StackFactory, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # WatchdogSec=0.1 -> ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with trio.fail_after(20):
        await echo_stack(stack_factory)
        await trio.sleep(0.5)
        pings = [m for m in pending_datagrams(notify_socket) if m == b"WATCHDOG=1"]
        assert len(pings) >= 3


async def test_the_change_watcher_runs_only_where_a_service_follows_changes(
    stack_factory: StackFactory,
) -> None:
    # An SMTP-only process (its own systemd unit) would read the change log
    # several times a second for nobody; IMAP, POP3 and WebSocket sessions
    # subscribe, so a process serving one of them runs the watcher.
    with trio.fail_after(30):
        smtp_only = await stack_factory(services=("smtp", "submission"))
        with pytest.raises(RuntimeError):
            smtp_only.store.subscribe(1)
        for follower in sorted(service.SUBSCRIBING_SERVICES):
            stack = await stack_factory(services=("smtp", follower))
            stack.store.subscribe(1).close()
