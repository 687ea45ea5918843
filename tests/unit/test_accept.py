"""accept.py over real loopback sockets: what every listener's loop promises."""

from __future__ import annotations

import errno
import os
import socket

import pytest
import trio
import trio.testing

from mailstack import accept


def _listening() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("tuned_listener", [False, True])
async def test_each_connection_gets_its_own_task_with_trios_socket_options(
    tuned_listener: bool,
) -> None:
    # listening_socket sets the options on the listener, where Linux passes
    # them on to each connection; a listener without them (or a system that
    # does not pass them on) gets them set per connection.
    listening = _listening()
    if tuned_listener:
        accept.tune_connection(listening)
    seen: list[tuple[int, int, bytes]] = []
    addresses: dict[bytes, object] = {}
    all_seen = trio.Event()

    async def start_connection(sock: socket.socket, address: object) -> None:
        with sock:
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            lowat = sock.getsockopt(socket.IPPROTO_TCP, accept.NOTSENT_LOWAT_OPTION)
            sock.setblocking(False)
            await trio.lowlevel.wait_readable(sock)
            greeting = sock.recv(100)
            seen.append((nodelay, lowat, greeting))
            addresses[greeting] = address
            if len(seen) == 5:
                all_seen.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as handlers:
            handlers.start_soon(accept.accept_forever, listening, start_connection, handlers)
            clients = [socket.create_connection(listening.getsockname()) for _ in range(5)]
            for number, client in enumerate(clients):
                client.sendall(b"client %d" % number)
            await all_seen.wait()
            handlers.cancel_scope.cancel()
    # Each task is told its peer's address (the client's own end).
    expected = {b"client %d" % n: client.getsockname() for n, client in enumerate(clients)}
    for client in clients:
        client.close()
    accept.close_listening(listening)
    assert sorted(seen) == [(1, accept.NOTSENT_LOWAT_BYTES, b"client %d" % n) for n in range(5)]
    assert addresses == expected


async def test_a_burst_of_connects_lets_other_tasks_run() -> None:
    # More waiting connections than ACCEPT_BURST: the loop must yield
    # between bursts, not only when the kernel's queue is empty.
    listening = _listening()
    clients = [
        socket.create_connection(listening.getsockname()) for _ in range(accept.ACCEPT_BURST * 3)
    ]
    accepted: list[int] = []
    all_accepted = trio.Event()
    ticks = 0

    async def start_connection(sock: socket.socket, address: object) -> None:
        accepted.append(ticks)
        sock.close()
        if len(accepted) == len(clients):
            all_accepted.set()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(accept.accept_forever, listening, start_connection, nursery)
            await all_accepted.wait()
            nursery.cancel_scope.cancel()
    ticks_between = sorted(set(accepted))
    for client in clients:
        client.close()
    accept.close_listening(listening)
    assert len(ticks_between) >= 3  # the ticker ran at least between the bursts


class _FailingListener:
    """A listening socket whose accept fails as the kernel would (the
    descriptor-level accept that accept_forever calls)."""

    def __init__(self, failures: list[int], real: socket.socket) -> None:
        self._failures = failures
        self._real = real
        self.family, self.type, self.proto = real.family, real.type, real.proto

    def _accept(self) -> tuple[int, object]:
        if self._failures:
            code = self._failures.pop(0)
            raise OSError(code, errno.errorcode[code])
        return self._real._accept()  # type: ignore[attr-defined,no-any-return]

    def fileno(self) -> int:
        return self._real.fileno()


async def test_out_of_descriptors_pauses_then_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    real = _listening()
    client = socket.create_connection(real.getsockname())
    failing = _FailingListener([errno.EMFILE, errno.ECONNABORTED], real)
    got: list[float] = []
    accepted = trio.Event()

    async def start_connection(sock: socket.socket, address: object) -> None:
        got.append(trio.current_time())
        sock.close()
        accepted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            accept.accept_forever,
            failing,  # type: ignore[arg-type]
            start_connection,
            nursery,
        )
        await accepted.wait()
        nursery.cancel_scope.cancel()
    client.close()
    accept.close_listening(real)
    assert got[0] >= accept.RESOURCE_PAUSE_SECONDS  # paused, did not spin


async def test_other_accept_errors_propagate() -> None:
    real = _listening()
    failing = _FailingListener([errno.EBADF], real)

    async def start_connection(sock: socket.socket, address: object) -> None:
        raise AssertionError("nothing to accept")

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError) as raised:
            await accept.accept_forever(failing, start_connection, nursery)  # type: ignore[arg-type]
    assert raised.value.errno == errno.EBADF
    accept.close_listening(real)


class _NotASocketFirst(_FailingListener):
    """Hands out a descriptor that is no socket (a pipe's end), then accepts."""

    def __init__(self, real: socket.socket, descriptor: int) -> None:
        super().__init__([], real)
        self._descriptor: int | None = descriptor

    def _accept(self) -> tuple[int, object]:
        if self._descriptor is not None:
            descriptor, self._descriptor = self._descriptor, None
            return descriptor, ("127.0.0.1", 1)
        return super()._accept()


async def test_a_descriptor_that_is_no_socket_is_closed_and_the_loop_goes_on() -> None:
    real = _listening()
    read_end, write_end = os.pipe()
    client = socket.create_connection(real.getsockname())
    accepted = trio.Event()

    async def start_connection(sock: socket.socket, address: object) -> None:
        sock.close()
        accepted.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                accept.accept_forever,
                _NotASocketFirst(real, read_end),  # type: ignore[arg-type]
                start_connection,
                nursery,
            )
            await accepted.wait()
            nursery.cancel_scope.cancel()
    client.close()
    os.close(write_end)
    accept.close_listening(real)
    with pytest.raises(OSError) as closed:
        os.fstat(read_end)  # the loop closed it
    assert closed.value.errno == errno.EBADF
