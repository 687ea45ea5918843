"""ctx.shutdown: how a service ends idle sessions politely on SIGTERM.

A tiny line protocol registered in the ``websocket`` slot stands in for the
protocol servers: between commands it waits inside ``ctx.shutdown.idle()``
and says ``BYE`` when that wait is cancelled; a ``SLOW`` command is work in
progress that must be allowed to finish within the grace period.
"""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import trio

from mailstack import net, service
from mailstack.config import Endpoint
from mailstack.service import ServiceContext, Shutdown

from .conftest import Stack, StackFactory

SLOW_SECONDS = 0.5


async def polite_session(ctx: ServiceContext, stream: trio.abc.Stream, peer: net.Peer) -> None:
    await net.send_all(stream, b"HELLO\r\n")
    while True:
        with ctx.shutdown.idle() as idle:
            line = await net.receive_some(stream, 1024)
        if idle.cancelled_caught:
            await net.send_all(stream, b"BYE shutting down\r\n")
            return
        if not line:
            return
        if line.startswith(b"SLOW"):
            await trio.sleep(SLOW_SECONDS)
        await net.send_all(stream, b"DONE " + line)


async def serve_polite(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    await net.serve_endpoints(
        "polite",
        partial(polite_session, ctx),
        ctx.config.websocket.listen,
        tls=None,
        limits=net.ConnectionLimits(0, 0),
        refuse=lambda peer: b"busy\r\n",
        task_status=task_status,
    )


@pytest.fixture
def polite_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(service.SERVICES, "websocket", f"{__name__}:serve_polite")


async def polite_stack(stack_factory: StackFactory, **kwargs: object) -> Stack:
    return await stack_factory(
        services=("websocket",), websocket={"listen": (Endpoint("127.0.0.1", 0),)}, **kwargs
    )


async def connect(stack: Stack) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(*stack.addr("polite"))
    assert await stream.receive_some(100) == b"HELLO\r\n"
    return stream


async def read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(1024):
        data += chunk
    return data


@pytest.mark.usefixtures("polite_service")
async def test_sigterm_says_goodbye_to_idle_and_lets_work_finish(
    stack_factory: StackFactory,
) -> None:
    with trio.fail_after(20):
        # A long grace: the stop must end as soon as the sessions do.
        stack = await polite_stack(stack_factory, handle_signals=True, grace_seconds=30.0)
        idle = await connect(stack)
        busy = await connect(stack)
        await busy.send_all(b"SLOW 1\r\n")
        await trio.sleep(0.1)  # the SLOW command is running
        start = trio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
        assert await read_all(idle) == b"BYE shutting down\r\n"
        assert trio.current_time() - start < SLOW_SECONDS
        # The command in progress finishes and gets its answer, then the
        # session is idle and is told goodbye too.
        assert await read_all(busy) == b"DONE SLOW 1\r\nBYE shutting down\r\n"
        await stack.stopped.wait()
        assert trio.current_time() - start < 5


@pytest.mark.usefixtures("polite_service")
async def test_grace_seconds_default_comes_from_config(stack_factory: StackFactory) -> None:
    """Without grace_seconds, run() uses [service] shutdown_grace_seconds."""
    with trio.fail_after(20):
        stack = await polite_stack(
            stack_factory, grace_seconds=None, service={"shutdown_grace_seconds": 0.2}
        )
        stuck = await connect(stack)
        await stuck.send_all(b"SLOW\r\n")  # longer than the grace period
        await trio.sleep(0.05)
        start = trio.current_time()
        stack.stop.set()
        await stack.stopped.wait()
        assert 0.1 < trio.current_time() - start < SLOW_SECONDS
        assert await read_all(stuck) == b""  # cut off, no answer


async def test_idle_after_the_stop_began_is_cancelled_at_once() -> None:
    shutdown = Shutdown()
    shutdown.begin()
    with shutdown.idle() as scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert shutdown.started


async def test_begin_cancels_only_idle_waits() -> None:
    shutdown = Shutdown()
    results: list[tuple[str, bool]] = []

    async def idle_waiter() -> None:
        with shutdown.idle() as scope:
            await trio.sleep_forever()
        results.append(("idle", scope.cancelled_caught))

    async def worker() -> None:
        await trio.sleep(0.2)
        results.append(("work", True))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(idle_waiter)
            nursery.start_soon(worker)
            await trio.sleep(0.05)
            shutdown.begin()
    assert results == [("idle", True), ("work", True)]
