"""PlainStream against trio's own conformance checks for half-closeable
streams, plus the scheduling promises the module makes."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from mailstack import accept, net
from mailstack.plain_stream import PlainStream


async def _pair() -> tuple[PlainStream, PlainStream]:
    # A real TCP connection on loopback, as the listeners accept it.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    accept.tune_connection(server)
    accept.tune_connection(client)
    return PlainStream(server), PlainStream(client)


async def _fill(stream: PlainStream) -> None:
    """Send until the kernel's buffers are full (the sender blocks)."""

    async def sender() -> None:
        while True:
            await stream.send_all(b"x" * 10000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def _clogged_pair() -> tuple[PlainStream, PlainStream]:
    left, right = await _pair()
    await _fill(left)
    await _fill(right)
    return left, right


async def test_conforms_to_trio_half_closeable_stream() -> None:
    await trio.testing.check_half_closeable_stream(_pair, _clogged_pair)


async def test_receive_with_data_waiting_is_still_a_schedule_point() -> None:
    # A client that pipelines without pause must not starve other sessions.
    server, client = await _pair()
    await client.send_all(b"QUIT\r\n" * 100)
    await trio.sleep(0.05)  # let it arrive
    with trio.testing.assert_checkpoints():
        assert await server.receive_some(6) == b"QUIT\r\n"


async def test_send_all_is_a_cancel_point() -> None:
    server, _client = await _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.send_all(b"250 ok\r\n")


async def test_large_send_completes_through_a_full_buffer() -> None:
    server, client = await _pair()
    payload = bytes(range(256)) * (8 * 4096)  # 8 MiB: many times the socket buffer
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            chunk = await client.receive_some(65536)
            assert chunk
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await server.send_all(payload)
    assert bytes(received) == payload


async def test_peer_reset_is_broken_resource() -> None:
    server, client = await _pair()
    # SO_LINGER 0: close sends RST instead of FIN.
    linger_zero = struct.pack("ii", 1, 0)
    client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
    await client.aclose()
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some(100)


async def test_send_then_receive_sends_then_reads_the_answer() -> None:
    server, client = await _pair()

    async def peer() -> None:
        assert await client.receive_some(100) == b"220 ready\r\n"
        await client.send_all(b"EHLO a.example\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        assert await server.send_then_receive(b"220 ready\r\n", 100) == b"EHLO a.example\r\n"


async def test_send_then_receive_yields_once_when_the_answer_is_there() -> None:
    # One schedule point for both halves: the peer's answer, already
    # waiting by the time the scheduler comes back, is read without a second.
    server, client = await _pair()
    await client.send_all(b"QUIT\r\n")
    await trio.sleep(0.05)  # let it arrive
    steps = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.testing.assert_checkpoints():
            assert await server.send_then_receive(b"250 ok\r\n", 100) == b"QUIT\r\n"
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.count == 1  # send_all + receive_some: 2
    assert await client.receive_some(100) == b"250 ok\r\n"


class _StepCounter(trio.abc.Instrument):
    """How often the scheduler resumes ``task`` (once per schedule point)."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def test_send_then_receive_is_a_cancel_point_before_sending() -> None:
    server, client = await _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.send_then_receive(b"250 ok\r\n", 100)
    await server.send_all(b"next\r\n")
    assert await client.receive_some(100) == b"next\r\n"  # nothing was sent before


async def test_send_then_receive_sees_eof_and_a_closed_stream() -> None:
    server, client = await _pair()
    await client.send_eof()
    assert await server.send_then_receive(b"221 bye\r\n", 100) == b""
    await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_then_receive(b"x", 100)


async def test_the_last_reply_and_the_close_take_no_scheduler_round() -> None:
    # net.send_last + net.close_stream end an SMTP session (221, then the
    # close): on a plain socket neither yields, as the task ends next.
    server, client = await _pair()
    steps = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(steps)
    try:
        assert await net.send_last(server, b"221 bye\r\n")
        await net.close_stream(server)
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert steps.count == 0  # send_all + aclose: 2
    assert await client.receive_some(100) == b"221 bye\r\n"
    assert await client.receive_some(100) == b""  # then the close
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all_now(b"x")


async def test_send_all_now_is_still_a_cancel_point() -> None:
    server, client = await _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await server.send_all_now(b"221 bye\r\n")
    await server.send_all(b"next\r\n")
    assert await client.receive_some(100) == b"next\r\n"  # nothing was sent before


async def test_send_last_is_false_once_the_stream_is_closed() -> None:
    server, _client = await _pair()
    await server.aclose()
    assert not await net.send_last(server, b"221 bye\r\n")


async def test_a_socket_closed_after_a_wait_leaves_nothing_behind_for_its_descriptor() -> None:
    # close_now skips trio's notify_closing when no wait is in progress:
    # the next socket on the same descriptor must still be waited on
    # correctly (a stale registration would make this wait forever).
    server, client = await _pair()

    async def send_later(stream: PlainStream) -> None:
        await trio.sleep(0.05)
        await stream.send_all(b"1")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later, client)
            assert await server.receive_some(10) == b"1"  # waited in epoll
        descriptor = server._sock.fileno()
        await server.aclose()
        # New sockets take the lowest free descriptors: soon the closed one.
        spare: list[socket.socket] = []
        while True:
            first, second = socket.socketpair()
            if descriptor in (first.fileno(), second.fileno()):
                break
            spare += (first, second)
            assert len(spare) < 1000
        for sock in spare:
            sock.close()
        if second.fileno() == descriptor:
            first, second = second, first
        reused, peer = PlainStream(first), PlainStream(second)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later, peer)
            assert await reused.receive_some(10) == b"1"
        await reused.aclose()
        await peer.aclose()
    await client.aclose()
