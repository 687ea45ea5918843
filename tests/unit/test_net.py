"""net.py over real loopback sockets: binding, limits, isolation, TLS."""

from __future__ import annotations

import logging
import re
import socket
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from mailstack import net
from mailstack.config import Config, Endpoint, TlsConfig
from mailstack.tls import TlsProvider

LOCAL = (Endpoint("127.0.0.1", 0),)
REFUSAL = b"421 too many\r\n"


def refuse(peer: net.Peer) -> bytes:
    return REFUSAL


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls(ca: trustme.CA, tmp_path: Path) -> TlsProvider:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = Config(
        data_dir=str(tmp_path),
        tls=TlsConfig(cert_file=str(tmp_path / "cert.pem"), key_file=str(tmp_path / "key.pem")),
    )
    return TlsProvider(config)


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def echo(stream: trio.abc.Stream, peer: net.Peer) -> None:
    """Echo lines until EOF; answers b"peer?" with what the server knows."""
    while data := await net.receive_some(stream, 1024):
        if data == b"peer?":
            data = f"{peer.ip} {peer.implicit_tls} {len(peer.session_id)}".encode()
        if not await net.send_all(stream, data):
            return


async def start(
    nursery: trio.Nursery,
    handler: net.Handler,
    *,
    endpoints: tuple[Endpoint, ...] = LOCAL,
    tls: TlsProvider | None = None,
    limits: net.ConnectionLimits | None = None,
) -> list[net.Bound]:
    bound: list[net.Bound] = await nursery.start(
        partial(
            net.serve_endpoints,
            "test",
            handler,
            endpoints,
            tls=tls,
            limits=limits or net.ConnectionLimits(0, 0),
            refuse=refuse,
        )
    )
    return bound


async def connect(bound: net.Bound) -> trio.SocketStream:
    return await trio.open_tcp_stream(bound.host, bound.port)


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(1024):
        data += chunk
    return data


async def test_port_zero_is_reported_and_serves() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, echo)
            assert len(bound) == 1
            assert bound[0].host == "127.0.0.1"
            assert bound[0].port != 0
            assert bound[0].service == "test"
            assert not bound[0].implicit_tls
            assert str(bound[0]) == f"test tcp://127.0.0.1:{bound[0].port}"
            stream = await connect(bound[0])
            await stream.send_all(b"peer?")
            assert await stream.receive_some(100) == b"127.0.0.1 False 8"
            await stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_ipv6_literal_and_several_endpoints() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 not available")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints = (Endpoint("::1", 0), Endpoint("127.0.0.1", 0))
            bound = await start(nursery, echo, endpoints=endpoints)
            assert [b.host for b in bound] == ["::1", "127.0.0.1"]
            assert str(bound[0]).startswith("test tcp://[::1]:")
            for b in bound:
                stream = await connect(b)
                await stream.send_all(b"hi")
                assert await stream.receive_some(10) == b"hi"
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_no_endpoints_reports_nothing_and_returns() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await start(nursery, echo, endpoints=()) == []


async def test_bind_failure_propagates_before_started() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError):
                    await start(nursery, echo, endpoints=(Endpoint("127.0.0.1", port),))


def holding_handler(release: trio.Event, entered: list[net.Peer]) -> net.Handler:
    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        entered.append(peer)
        await net.send_all(stream, b"hello\r\n")
        await release.wait()

    return handler


async def test_per_ip_limit_refuses_with_message_and_frees_slot() -> None:
    release = trio.Event()
    entered: list[net.Peer] = []
    limits = net.ConnectionLimits(max_connections=0, max_per_ip=1)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, holding_handler(release, entered), limits=limits)
            first = await connect(bound[0])
            assert await first.receive_some(100) == b"hello\r\n"
            assert limits.count("127.0.0.1") == 1
            second = await connect(bound[0])
            assert await read_until_eof(second) == REFUSAL
            assert len(entered) == 1
            release.set()
            assert await read_until_eof(first) == b""
            # The slot is released before the stream is closed.
            assert limits.total == 0
            assert limits.count("127.0.0.1") == 0
            third = await connect(bound[0])
            assert await third.receive_some(100) == b"hello\r\n"
            nursery.cancel_scope.cancel()


async def test_global_limit() -> None:
    release = trio.Event()
    entered: list[net.Peer] = []
    limits = net.ConnectionLimits(max_connections=2, max_per_ip=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, holding_handler(release, entered), limits=limits)
            streams = [await connect(bound[0]) for _ in range(2)]
            for s in streams:
                assert await s.receive_some(100) == b"hello\r\n"
            assert limits.total == 2
            refused = await connect(bound[0])
            assert await read_until_eof(refused) == REFUSAL
            assert len(entered) == 2
            assert limits.total == 2
            nursery.cancel_scope.cancel()


async def test_refusal_over_implicit_tls_is_readable(ca: trustme.CA, tls: TlsProvider) -> None:
    release = trio.Event()
    entered: list[net.Peer] = []
    limits = net.ConnectionLimits(max_connections=1, max_per_ip=0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, holding_handler(release, entered), tls=tls, limits=limits)
            first = trio.SSLStream(
                await connect(bound[0]), client_context(ca), server_hostname="localhost"
            )
            assert await first.receive_some(100) == b"hello\r\n"
            second = trio.SSLStream(
                await connect(bound[0]), client_context(ca), server_hostname="localhost"
            )
            # A clean TLS close (close_notify), not a truncated stream.
            assert await read_until_eof(second) == REFUSAL
            assert len(entered) == 1
            nursery.cancel_scope.cancel()


def test_limits_bookkeeping() -> None:
    limits = net.ConnectionLimits(max_connections=3, max_per_ip=2)
    assert limits.try_acquire("10.0.0.1")
    assert limits.try_acquire("10.0.0.1")
    assert not limits.try_acquire("10.0.0.1")
    assert limits.try_acquire("10.0.0.2")
    assert not limits.try_acquire("10.0.0.3")  # global limit
    limits.release("10.0.0.1")
    assert limits.count("10.0.0.1") == 1
    assert limits.try_acquire("10.0.0.3")
    assert limits.total == 3


async def test_failing_handler_is_logged_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[net.Peer] = []

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        calls.append(peer)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
        await echo(stream, peer)

    limits = net.ConnectionLimits(0, 0)
    caplog.set_level(logging.ERROR, logger="mailstack.net")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, handler, limits=limits)
            first = await connect(bound[0])
            # The failing session is closed, not left hanging.
            assert await read_until_eof(first) == b""
            second = await connect(bound[0])
            await second.send_all(b"still alive")
            assert await second.receive_some(100) == b"still alive"
            nursery.cancel_scope.cancel()
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert getattr(failures[0], "sid", None) == calls[0].session_id
    assert failures[0].exc_info is not None
    assert "handler bug" in str(failures[0].exc_info[1])
    assert limits.total == 0


async def test_implicit_tls(ca: trustme.CA, tls: TlsProvider) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, echo, tls=tls)
            assert bound[0].implicit_tls
            tcp = await connect(bound[0])
            client = trio.SSLStream(tcp, client_context(ca), server_hostname="localhost")
            await client.send_all(b"peer?")
            assert await client.receive_some(100) == b"127.0.0.1 True 8"
            cipher = client.cipher()
            assert cipher is not None
            assert client.version() in ("TLSv1.2", "TLSv1.3")
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_implicit_tls_bad_handshake_does_not_reach_handler(
    tls: TlsProvider, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[net.Peer] = []

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        calls.append(peer)

    caplog.set_level(logging.INFO, logger="mailstack.net")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, handler, tls=tls)
            plain = await connect(bound[0])
            await plain.send_all(b"EHLO not-tls\r\n")
            assert await read_until_eof(plain) == b""
            nursery.cancel_scope.cancel()
    assert calls == []
    assert any("handshake" in r.getMessage() for r in caplog.records)


async def test_starttls_upgrade(ca: trustme.CA, tls: TlsProvider) -> None:
    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        assert await net.receive_some(stream, 100) == b"STARTTLS\r\n"
        assert await net.send_all(stream, b"OK go ahead\r\n")
        secure = await net.start_tls(stream, tls)
        await echo(secure, peer)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, handler)
            tcp = await connect(bound[0])
            await tcp.send_all(b"STARTTLS\r\n")
            assert await tcp.receive_some(100) == b"OK go ahead\r\n"
            client = trio.SSLStream(tcp, client_context(ca), server_hostname="localhost")
            await client.do_handshake()
            await client.send_all(b"secret stuff")
            assert await client.receive_some(100) == b"secret stuff"
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_receive_and_send_treat_vanished_peer_as_eof() -> None:
    results: list[object] = []
    done = trio.Event()

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        results.append(await net.receive_some(stream, 100))
        # The peer reset the connection: sending eventually reports False.
        ok = True
        for _ in range(100):
            ok = await net.send_all(stream, b"x" * 65536)
            if not ok:
                break
        results.append(ok)
        done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, handler)
            tcp = await connect(bound[0])
            # SO_LINGER 0: close sends RST, the harshest way to vanish.
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await tcp.aclose()
            await done.wait()
            nursery.cancel_scope.cancel()
    assert results == [b"", False]


async def test_drain_closes_listeners_but_lets_sessions_finish() -> None:
    release = trio.Event()
    entered: list[net.Peer] = []
    drain = net.Drain()
    finished = trio.Event()

    async def serve(task_status: trio.TaskStatus[list[net.Bound]]) -> None:
        net.current_drain.set(drain)
        await net.serve_endpoints(
            "test",
            holding_handler(release, entered),
            LOCAL,
            tls=None,
            limits=net.ConnectionLimits(0, 0),
            refuse=refuse,
            task_status=task_status,
        )
        finished.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            bound: list[net.Bound] = await nursery.start(serve)
            session = await connect(bound[0])
            assert await session.receive_some(100) == b"hello\r\n"
            drain.close_listeners()
            await trio.sleep(0.05)
            with pytest.raises(OSError):
                await connect(bound[0])
            # The established session still works until its handler returns.
            assert not finished.is_set()
            release.set()
            await finished.wait()
            assert await read_until_eof(session) == b""


def test_session_ids_are_eight_hex_digits_and_do_not_repeat() -> None:
    ids = [net.new_session_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    # 32 random bits: one equal pair among 1,000 has odds of about 1 in
    # 8,600 (tolerated), two of about 1 in 150 million.
    assert len(set(ids)) >= 999
