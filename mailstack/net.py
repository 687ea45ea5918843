"""Shared trio plumbing for the protocol servers.

``serve_endpoints`` binds a service's listeners, enforces the connection
limits, gives each connection its own task with a session id, and makes sure a
failing handler is logged and cleaned up without touching other connections.
``start_tls`` is the server side of STARTTLS/STLS.  ``receive_some`` and
``send_all`` turn a vanished peer into EOF / ``False`` so the protocol loops
need no transport-specific exception handling.

Graceful stop: listener tasks run in their own cancel scope, separate from the
nursery that holds the connections, so ``service.run`` can close every
listener first (via :class:`Drain`) and give open sessions a grace period.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import random
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from mailstack import accept
from mailstack.config import Endpoint
from mailstack.plain_stream import PlainStream
from mailstack.tls import TlsProvider

logger = logging.getLogger("mailstack.net")

# A refusal (connection limit) is a courtesy; a client that does not read it
# must not hold the slot we just refused it.
REFUSE_SECONDS = 5.0
# Implicit TLS: a client that connects and never finishes the handshake is
# dropped after this long, before the protocol handler is involved.
HANDSHAKE_SECONDS = 60.0

# Closing a TLS session sends close_notify (so clients see a clean end, not
# a truncation); a peer that does not take it within this long is cut off.
CLOSE_SECONDS = 2.0

Handler = Callable[[trio.abc.Stream, "Peer"], Awaitable[None]]


# Not frozen, made per session or message: see smtp/commands.py.
@dataclass(slots=True)
class Peer:
    """The remote end of one connection, as the protocol handler sees it."""

    ip: str
    port: int
    session_id: str  # short random id; every log line about the connection carries it
    local_port: int
    implicit_tls: bool


@dataclass(frozen=True, slots=True)
class Bound:
    """One listening socket, reported once it is bound (port 0 resolved)."""

    service: str
    host: str
    port: int
    implicit_tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "tls" if self.implicit_tls else "tcp"
        return f"{self.service} {scheme}://{host}:{self.port}"


class ConnectionLimits:
    """Open-connection bookkeeping, in total and per client address.

    A limit of 0 means unlimited.  All calls happen on the trio thread, so no
    lock is needed.
    """

    def __init__(self, max_connections: int, max_per_ip: int) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        return self._total

    def count(self, ip: str) -> int:
        return self._per_ip[ip]

    def try_acquire(self, ip: str) -> bool:
        """Take a slot for ``ip``; False (nothing taken) when a limit is reached."""
        if self.max_connections and self._total >= self.max_connections:
            return False
        if self.max_per_ip and self._per_ip[ip] >= self.max_per_ip:
            return False
        self._total += 1
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]


class Drain:
    """Lets ``service.run`` stop accepting on every listener at once.

    ``serve_endpoints`` registers its accept-loop cancel scope with the Drain
    found in :data:`current_drain` (inherited by child tasks), so a graceful
    stop closes the listeners while connections keep running.
    """

    def __init__(self) -> None:
        self._scopes: list[trio.CancelScope] = []
        self.closing = False

    def register(self, scope: trio.CancelScope) -> None:
        if self.closing:
            scope.cancel()
        self._scopes.append(scope)

    def close_listeners(self) -> None:
        self.closing = True
        for scope in self._scopes:
            scope.cancel()


current_drain: contextvars.ContextVar[Drain | None] = contextvars.ContextVar(
    "mailstack_drain", default=None
)


# Session ids name a connection in the logs and in Received lines, which
# recipients see: they need not be secret, only unlikely to repeat.  A
# generator seeded once from the OS (random.Random() does) rather than
# secrets.token_hex: that asks the kernel (getrandom) for every connection.
_session_ids = random.Random()


def new_session_id() -> str:
    """Eight hex digits, as random as the 32 bits behind them."""
    return f"{_session_ids.getrandbits(32):08x}"


def _address(sockaddr: object) -> tuple[str, int]:
    """(ip, port) from a socket address; IPv4-mapped IPv6 shown as plain IPv4
    so per-IP limits and throttling see one address per client."""
    assert isinstance(sockaddr, tuple)
    host, port = str(sockaddr[0]), int(sockaddr[1])
    if ":" not in host:
        return host, port  # AF_INET: already plain IPv4 (skips parsing per connection)
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host, port
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped), port
    return host, port


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes:
    """Next chunk from the peer; ``b""`` at EOF and also when the peer vanished
    (reset, broken TLS), which the protocol loops treat the same way."""
    try:
        data = await stream.receive_some(max_bytes)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        return b""
    return data if isinstance(data, bytes) else bytes(data)


async def send_all(stream: trio.abc.SendStream, data: bytes) -> bool:
    """Send ``data``; False when the peer is gone (the caller ends the session)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        return False
    return True


def plain_transport(stream: trio.abc.Stream) -> PlainStream:
    """The PlainStream under ``stream`` (itself, or under its TLS layers)."""
    while not isinstance(stream, PlainStream):
        inner = getattr(stream, "transport_stream", None)
        if inner is None:
            raise TypeError(f"no PlainStream under {type(stream).__name__}")
        stream = inner
    return stream


async def send_last(stream: trio.abc.SendStream, data: bytes) -> bool:
    """``send_all`` for the last bytes before the connection closes (with
    ``close_stream``): on a plain socket without a schedule point, as the
    connection's task ends right after.  False when the peer is gone."""
    if not isinstance(stream, PlainStream):
        return await send_all(stream, data)
    try:
        await stream.send_all_now(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return False
    return True


async def reply_and_receive(stream: trio.abc.Stream, data: bytes, max_bytes: int) -> bytes:
    """``send_all`` then ``receive_some`` as above, with one schedule point
    on a plain socket (PlainStream.send_then_receive).  A peer that vanished
    during either half reads as EOF (``b""``)."""
    if not isinstance(stream, PlainStream):
        if not await send_all(stream, data):
            return b""
        return await receive_some(stream, max_bytes)
    try:
        return await stream.send_then_receive(data, max_bytes)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return b""


async def start_tls(stream: trio.abc.Stream, tls: TlsProvider) -> trio.SSLStream[trio.abc.Stream]:
    """Server side of STARTTLS (RFC 3207), STLS (RFC 2595) and IMAP STARTTLS.

    The caller must already have thrown away any plaintext it buffered
    (RFC 3207 4.2).  Raises ``trio.BrokenResourceError`` when the handshake
    fails; bound it with the caller's command-timeout cancel scope.
    """
    ssl_stream = trio.SSLStream(stream, tls.server_context(), server_side=True)
    await ssl_stream.do_handshake()
    return ssl_stream


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close without ever hanging: TLS streams get a bounded attempt at
    close_notify; on timeout, error or cancellation trio's SSLStream closes
    the socket forcefully, and a plain socket closes at once."""
    if isinstance(stream, PlainStream):
        # Never blocks: no timer needed.  No schedule point either: the
        # connection's task ends next (one scheduler round per session).
        stream.close_now()
        return
    with trio.move_on_after(CLOSE_SECONDS):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer is gone; the socket is closed either way


async def _refuse(stream: trio.abc.Stream, message: bytes, tls: TlsProvider | None) -> None:
    with trio.move_on_after(REFUSE_SECONDS):
        if tls is not None:
            # Implicit TLS: the refusal only makes sense inside the handshake.
            stream = trio.SSLStream(stream, tls.server_context(), server_side=True)
        await send_all(stream, message)
    await close_stream(stream)


async def _connection(
    service: str,
    handler: Handler,
    tls: TlsProvider | None,
    limits: ConnectionLimits,
    refuse: Callable[[Peer], bytes],
    local_port: int,
    accepted: socket.socket,
    address: object,
) -> None:
    """One accepted connection: limits, optional TLS, the handler, cleanup.
    ``address`` is the peer's from accept() and ``local_port`` the
    listener's (two system calls fewer than asking the socket).

    Never raises (except Cancelled): a failing handler is logged with its
    session id, so one bad session cannot stop the service.
    """
    plain = PlainStream(accepted)
    ip, port = _address(address)
    peer = Peer(ip, port, new_session_id(), local_port, tls is not None)
    if not limits.try_acquire(ip):
        logger.warning(
            "%s refused %s:%s: connection limit (total %d, this address %d)",
            service,
            ip,
            port,
            limits.total,
            limits.count(ip),
            extra={"sid": peer.session_id},
        )
        await _refuse(plain, refuse(peer), tls)
        return
    transport: trio.abc.Stream = plain
    try:
        logger.debug(
            "%s connection from %s:%s to port %d",
            service,
            ip,
            port,
            local_port,
            extra={"sid": peer.session_id},
        )
        if tls is not None:
            ssl_stream = trio.SSLStream(plain, tls.server_context(), server_side=True)
            transport = ssl_stream
            with trio.move_on_after(HANDSHAKE_SECONDS) as handshake_scope:
                try:
                    await ssl_stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    logger.info(
                        "%s TLS handshake with %s failed: %s",
                        service,
                        ip,
                        exc.__cause__ or exc,
                        extra={"sid": peer.session_id},
                    )
                    return
            if handshake_scope.cancelled_caught:
                logger.info(
                    "%s TLS handshake with %s timed out",
                    service,
                    ip,
                    extra={"sid": peer.session_id},
                )
                return
        await handler(transport, peer)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.info("%s connection lost: %s", service, exc, extra={"sid": peer.session_id})
    except Exception:
        logger.exception("%s session failed", service, extra={"sid": peer.session_id})
    finally:
        limits.release(ip)
        await close_stream(transport)


async def _open_listeners(endpoints: Sequence[Endpoint]) -> list[socket.socket]:
    listeners: list[trio.SocketListener] = []
    try:
        for endpoint in endpoints:
            listeners += await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise
    return [accept.listening_socket(listener) for listener in listeners]


async def serve_plain_and_tls(
    service: str,
    handler: Handler,
    listen: Sequence[Endpoint],
    tls_listen: Sequence[Endpoint],
    *,
    tls: TlsProvider,
    limits: ConnectionLimits,
    refuse: Callable[[Peer], bytes],
    task_status: trio.TaskStatus[list[Bound]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A service's two listener lists: ``listen`` in plaintext (where the
    protocol's STARTTLS/STLS is the handler's business) and ``tls_listen``
    with implicit TLS (RFC 8314), sharing ``limits``.  Returns once both have
    drained."""
    async with trio.open_nursery() as nursery:
        bound: list[Bound] = []
        for endpoints, implicit_tls in ((listen, None), (tls_listen, tls)):
            if endpoints:
                bound += await nursery.start(
                    partial(
                        serve_endpoints,
                        service,
                        handler,
                        endpoints,
                        tls=implicit_tls,
                        limits=limits,
                        refuse=refuse,
                    )
                )
        task_status.started(bound)


async def serve_endpoints(
    service: str,
    handler: Handler,
    endpoints: Sequence[Endpoint],
    *,
    tls: TlsProvider | None,
    limits: ConnectionLimits,
    refuse: Callable[[Peer], bytes],
    task_status: trio.TaskStatus[list[Bound]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` on every endpoint until cancelled (or drained).

    ``tls`` given means implicit TLS: each accepted stream is wrapped in an
    SSLStream with the provider's *current* context (so a reload applies to
    the next connection) and the handshake is done before ``handler`` runs.
    Binding errors (address in use, permission) propagate before
    ``task_status.started``.  Returns once the listeners are closed by a
    :class:`Drain` and every connection has ended.
    """
    if not endpoints:
        # e.g. a service with tls_listen but no listen: nothing to serve here.
        task_status.started([])
        return
    listeners = await _open_listeners(endpoints)
    async with trio.open_nursery() as handler_nursery:
        try:
            bound = []
            for listening in listeners:
                host, port = _address(listening.getsockname())
                bound.append(Bound(service, host, port, tls is not None))
            with trio.CancelScope() as accept_scope:
                drain = current_drain.get()
                if drain is not None:
                    drain.register(accept_scope)
                async with trio.open_nursery() as accept_nursery:
                    for listening, where in zip(listeners, bound, strict=True):
                        connection = partial(
                            _connection, service, handler, tls, limits, refuse, where.port
                        )
                        accept_nursery.start_soon(
                            accept.accept_forever, listening, connection, handler_nursery
                        )
                    task_status.started(bound)
        finally:
            # Draining (or failing): new connections are refused from now
            # on; the handler nursery waits for open sessions (service.run
            # cancels them after its grace).
            for listening in listeners:
                accept.close_listening(listening)
        logger.debug("%s stopped accepting", service)
