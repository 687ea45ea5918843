"""trio adapter for the SMTP client core: one connection to one address.

Everything SMTP decides is in ``client_protocol.py``; this file connects,
moves bytes, bounds every wait for the remote (RFC 5321 4.5.3.2: per
command, and longer for the reply to the end of the data) and does the TLS
handshakes.  ``on_done`` is awaited as soon as the core has every
recipient's outcome, before QUIT, so results are recorded right after the
remote's reply.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from mailstack.smtp.client_protocol import (
    ClientProtocol,
    Closed,
    Outcome,
    StartTls,
    TransactionDone,
)

RECEIVE_BYTES = 65536


class ConnectFailed(Exception):
    """No SMTP session came about (refused, unreachable, timeout, TLS)."""


class CertificateNotVerified(Exception):
    """The TLS handshake failed because the certificate did not verify."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    command: float
    data: float


OnDone = Callable[[dict[str, Outcome]], Awaitable[None]]


async def _handshake(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_name: str, seconds: float
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(stream, context, server_hostname=server_name)
    try:
        with trio.fail_after(seconds):
            await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            raise CertificateNotVerified(exc.__cause__.verify_message) from None
        raise ConnectFailed(f"TLS handshake failed: {exc.__cause__ or exc}") from None
    except trio.TooSlowError:
        raise ConnectFailed("TLS handshake timed out") from None
    return tls


async def run_session(
    core: ClientProtocol,
    address: str,
    port: int,
    *,
    server_name: str,
    tls_context: ssl.SSLContext,
    implicit_tls: bool,
    timeouts: Timeouts,
    on_done: OnDone,
) -> None:
    """Run ``core`` over a connection to ``address``:``port``.

    Raises ConnectFailed when no session came about, CertificateNotVerified
    when a TLS handshake refused the certificate (``on_done`` not called:
    the caller decides whether to try again without verification)."""
    try:
        with trio.fail_after(timeouts.connect):
            stream: trio.abc.Stream = await trio.open_tcp_stream(address, port)
    except (OSError, trio.TooSlowError) as exc:
        raise ConnectFailed(
            f"cannot connect to {address} port {port}: {exc or 'timeout'}"
        ) from None
    try:
        if implicit_tls:
            stream = await _handshake(stream, tls_context, server_name, timeouts.connect)
        while True:
            event = core.next_event()
            out = core.data_to_send()
            if out:
                try:
                    await stream.send_all(out)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    core.connection_lost("connection lost while sending")
                    continue
            if event is None:
                wait = timeouts.data if core.awaiting_data_end else timeouts.command
                data: bytes | bytearray | None = None
                with trio.move_on_after(wait):
                    try:
                        data = await stream.receive_some(RECEIVE_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                if data is None:
                    core.connection_lost(f"no reply within {wait:.0f} seconds")
                else:
                    core.receive_data(bytes(data))
            elif isinstance(event, StartTls):
                stream = await _handshake(stream, tls_context, server_name, timeouts.command)
                core.tls_started()
            elif isinstance(event, TransactionDone):
                await on_done(event.outcomes)
            elif isinstance(event, Closed):
                return
    finally:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await stream.aclose()
