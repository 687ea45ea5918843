"""The accept loop of every listener: ``trio.serve_listeners`` without its
per-connection wrappers.

Why not trio's: for each connection it builds a ``trio.SocketStream`` (two
setsockopt calls) that net.py at once turns into a PlainStream (three more
system calls to rebuild the socket object), and it closes that emptied
SocketStream again under a cancel scope of its own.  At a few hundred
one-message SMTP sessions a second that was about a tenth of the listener's
CPU (bench/smtp_instructions_bench.py).  What trio's loop does that matters
is kept: trio's socket options on every connection (tune_connection), a
pause instead of a spin when the process is out of file descriptors or
memory, and a schedule point at least every ``ACCEPT_BURST`` connections so
a flood of connects cannot starve the sessions already open.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

logger = logging.getLogger("mailstack.net")

# Out of descriptors or memory: accept again after this long (as trio does).
RESOURCE_PAUSE_SECONDS = 0.1
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# The connection went away between the kernel's queue and accept(): the
# next one may be fine.
_GONE_BEFORE_ACCEPT = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
# Linux's TCP_NOTSENT_LOWAT (socket module constant from Python 3.12 on).
NOTSENT_LOWAT_OPTION = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
NOTSENT_LOWAT_BYTES = 16384
# Connections accepted in a row before other tasks get a turn.
ACCEPT_BURST = 64


def listening_socket(listener: trio.SocketListener) -> socket.socket:
    """The plain socket of a listener from ``trio.open_tcp_listeners`` (which
    does the binding: dual stack, SO_REUSEADDR); non-blocking."""
    sock = socket.socket(fileno=listener.socket.detach())
    sock.setblocking(False)
    # Linux gives each accepted connection the listening socket's TCP
    # options: set once here, two system calls fewer per connection
    # (accept_forever checks the first connection and sets them itself
    # where they were not passed on).
    tune_connection(sock)
    return sock


async def accept_forever(
    listening: socket.socket,
    start_connection: Callable[[socket.socket, Any], Awaitable[None]],
    handler_nursery: trio.Nursery,
) -> None:
    """Accept until cancelled, starting ``start_connection(sock, address)``
    in ``handler_nursery`` for each connection (which then owns the socket;
    ``address`` is the peer's, as accept() gave it: no getpeername needed)."""
    in_a_row = 0
    inherited: bool | None = None  # connections get the listener's TCP options
    # socket.accept() turns the listener's family and type into enum members
    # for every connection (two Python-level enum calls, about a microsecond
    # each): the same socket object is made here from the plain numbers.
    family, kind, proto = int(listening.family), int(listening.type), listening.proto
    accept_descriptor = listening._accept  # type: ignore[attr-defined]
    while True:
        try:
            descriptor, address = accept_descriptor()
        except BlockingIOError:
            in_a_row = 0
            await trio.lowlevel.wait_readable(listening)
            continue
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                logger.error(
                    "accept failed (%s); pausing %.1f s", exc.strerror, RESOURCE_PAUSE_SECONDS
                )
                await trio.sleep(RESOURCE_PAUSE_SECONDS)
                continue
            if exc.errno in _GONE_BEFORE_ACCEPT:
                continue
            raise
        try:
            connection = socket.socket(family, kind, proto, fileno=descriptor)
        except OSError:  # the descriptor is not usable after all: drop it
            os.close(descriptor)
            continue
        if inherited is None:
            inherited = is_tuned(connection)
        if not inherited:
            tune_connection(connection)
        handler_nursery.start_soon(start_connection, connection, address)
        in_a_row += 1
        if in_a_row >= ACCEPT_BURST:
            in_a_row = 0
            await trio.lowlevel.checkpoint()


def tune_connection(connection: socket.socket) -> None:
    """trio's defaults for TCP streams: TCP_NODELAY (replies are small and
    the client waits for each) and TCP_NOTSENT_LOWAT of 16 KiB (a reader
    that is slow keeps at most that much unsent in the kernel per
    connection, and a sender is woken only when it could add more)."""
    try:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.setsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT_OPTION, NOTSENT_LOWAT_BYTES)
    except OSError:
        pass  # already reset by the peer: the session will see it


def is_tuned(connection: socket.socket) -> bool:
    """Whether ``connection`` has tune_connection's options already."""
    try:
        return (
            bool(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            and connection.getsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT_OPTION)
            == NOTSENT_LOWAT_BYTES
        )
    except OSError:
        return False


def close_listening(listening: socket.socket) -> None:
    """Close a listening socket, waking any task still waiting on it."""
    if listening.fileno() != -1:
        trio.lowlevel.notify_closing(listening)
        listening.close()
