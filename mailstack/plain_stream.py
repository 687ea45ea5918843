"""A connected TCP socket as a trio stream, with less work per call than
``trio.SocketStream``.

Why: an SMTP session that carries one message makes about fifteen stream
calls (seven replies, seven reads, the close), and at a few hundred sessions
a second trio's general-purpose layers around each socket call (conflict
detector object, error-translating context manager, memoryview slicing, the
``_try_sync`` helper) cost the listener as much as the SMTP core itself.
This class does the same with plain ``try``/``except``: the SMTP listener
runs about 13% fewer instructions per one-message session (callgrind,
bench/README.md).

It keeps trio's stream contract (trio.abc.HalfCloseableStream), checked by
``trio.testing.check_half_closeable_stream`` in tests/unit: every call of
that contract is a checkpoint (``receive_some`` with data already waiting
still yields, so a client that pipelines without pause cannot starve the
other sessions; only the extra ``send_all_now`` and ``close_now``, for the
end of a connection's task, are not);
concurrent senders get ``trio.BusyResourceError``; a vanished peer is
``trio.BrokenResourceError`` and a closed stream
``trio.ClosedResourceError``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable

import trio

# What one receive_some asks the kernel for when the caller gives no size.
DEFAULT_RECEIVE_BYTES = 65536


class PlainStream(trio.abc.HalfCloseableStream):
    """A connected stream socket (TCP, or a socketpair) as a trio stream;
    the socket is made non-blocking and belongs to the stream from now on."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._closed = False
        self._eof_sent = False
        self._sending = False  # trio streams refuse two concurrent senders
        self._waits = 0  # waits on the socket in progress (close_now)

    def getpeername(self) -> object:
        return self._sock.getpeername()

    def getsockname(self) -> object:
        return self._sock.getsockname()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = self._receive_size(max_bytes)
        data = self._receive_now(size)
        if data is None:
            return await self._receive_when_readable(size)
        await trio.lowlevel.checkpoint()
        return data

    async def send_then_receive(
        self, data: bytes | bytearray | memoryview, max_bytes: int | None = None
    ) -> bytes:
        """``send_all(data)``, then ``receive_some(max_bytes)``, with one
        schedule point instead of two: for a request-reply protocol's reply.
        The schedule point comes between sending and reading, where the
        peer needs time to answer anyway; when the answer is there by then,
        it is read at once (separately, ``send_all`` and ``receive_some``
        would each yield to the scheduler: two rounds per SMTP command)."""
        size = self._receive_size(max_bytes)
        await self.send_all_now(data)
        await trio.lowlevel.checkpoint()
        try:  # _receive_now, inline: this runs for every SMTP command
            return self._sock.recv(size)
        except BlockingIOError:
            return await self._receive_when_readable(size)
        except OSError as exc:
            raise self._translate(exc) from exc

    def _receive_size(self, max_bytes: int | None) -> int:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        size = DEFAULT_RECEIVE_BYTES if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        return size

    def _receive_now(self, size: int) -> bytes | None:
        """What the socket holds (b"" at EOF); None when it would block."""
        try:
            return self._sock.recv(size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._translate(exc) from exc

    async def _receive_when_readable(self, size: int) -> bytes:
        while True:
            await self._wait(trio.lowlevel.wait_readable)
            data = self._receive_now(size)
            if data is not None:
                return data
            # woken without data (spurious readiness): wait again

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_all_now(data)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_all_now(self, data: bytes | bytearray | memoryview) -> None:
        """send_all without its schedule point (it still waits, and yields,
        when the socket's buffer is full, and is a cancel point): for the
        caller that owes one anyway, or whose task ends right after (a last
        reply before ``close_now``)."""
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._eof_sent:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        try:
            # Nearly always one call takes it all (a reply is small and the
            # kernel's buffer empty): no view and no loop for that.
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise self._translate(exc) from exc
            if sent < len(data):
                await self._send_rest(memoryview(data), sent)
        finally:
            self._sending = False

    async def _send_rest(self, view: memoryview, sent: int) -> None:
        """The rest of a send the kernel took only part of: wait for room."""
        while sent < len(view):
            await self._wait(trio.lowlevel.wait_writable)
            try:
                sent += self._sock.send(view[sent:])
            except BlockingIOError:
                pass
            except OSError as exc:
                raise self._translate(exc) from exc

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self._wait(trio.lowlevel.wait_writable)
        finally:
            self._sending = False

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[None]]) -> None:
        """trio's wait_readable or wait_writable on the socket, counted."""
        self._waits += 1
        try:
            await wait(self._sock)
        finally:
            self._waits -= 1

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if self._eof_sent:
            return
        self._eof_sent = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._translate(exc) from exc

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def interrupt(self) -> bool:
        """Wake the tasks waiting on the socket with ClosedResourceError,
        as a close would, and leave it open: for a server that ends a
        session on its own terms (a timeout that still sends its 421, then
        closes).  Cheaper than a cancel scope per session, which costs more
        than a scheduler round to enter and leave.  False when nothing was
        waiting (nothing happened)."""
        if not self._waits:
            return False
        trio.lowlevel.notify_closing(self._sock)
        return True

    def close_now(self) -> None:
        """aclose without its schedule point: for a connection's task that
        ends right after (ending is as good as a schedule point to the
        others; one fewer scheduler round per connection)."""
        if not self._closed:
            self._closed = True
            if self._waits:
                # Wakes the tasks waiting on the socket with
                # ClosedResourceError before the descriptor is reused.  With
                # none waiting, trio holds nothing for it (a wait's
                # registration ends with the wait) and the kernel drops a
                # closed socket from epoll itself: the call, a failing
                # epoll_ctl among its steps, would cost every session.
                trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    def _translate(self, exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed or exc.errno == errno.EBADF:
            return trio.ClosedResourceError("stream is closed")
        return trio.BrokenResourceError(f"socket connection broken: {exc}")
