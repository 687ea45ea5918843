"""trio adapter of the WebSocket API: ``mailstack serve websocket``.

Connections come from ``net.serve_endpoints`` (limits, drain on stop, wss
through the ``[websocket]`` certificate) and are handed to trio-websocket's
server side (``wrap_server_stream``, over wsproto).  The upgrade request must
carry HTTP Basic credentials of an account, checked by the shared
Authenticator (so failed logins are throttled like IMAP's); a failure is
answered ``401`` and no WebSocket is opened.  After the handshake the
connection is subscribed to the account's changes (feed.py) and answers
JSON requests (api.py); the wire format is in protocol.py and
docs/websocket.md.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from mailstack import __version__, net
from mailstack.config import ConfigError, Endpoint, TlsConfig, WebsocketConfig
from mailstack.logs import session_logger
from mailstack.service import ServiceContext
from mailstack.store.records import AccountRecord, TemporaryFailure
from mailstack.tls import TlsProvider
from mailstack.websocket import feed
from mailstack.websocket import protocol as p
from mailstack.websocket.api import Api, ApiError

logger = logging.getLogger("mailstack.websocket")

PATH = "/"
REALM = b'Basic realm="mailstack", charset="UTF-8"'
# RFC 6455 7.4.1 close codes.
GOING_AWAY = 1001
INTERNAL_ERROR = 1011
# Closing handshake: a peer that does not answer our close frame in this
# long is cut off.
CLOSE_SECONDS = 2.0
# Frames trio-websocket may buffer per connection before its reader waits.
MESSAGE_QUEUE_SIZE = 16


def _refuse(peer: net.Peer) -> bytes:
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
        b"Retry-After: 5\r\nConnection: close\r\n\r\n"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(endpoints: Sequence[Endpoint], tls: bool) -> None:
    """Basic credentials travel in the clear without TLS: say so loudly
    when that can be seen by anything but this host."""
    if tls:
        return
    for endpoint in endpoints:
        if not _is_loopback(endpoint.host):
            logger.warning(
                "websocket listens on %s without TLS: passwords and mail cross the network "
                "in clear; set [websocket] cert_file and key_file (wss://) or listen on loopback",
                endpoint,
            )


def _tls_provider(ctx: ServiceContext) -> TlsProvider | None:
    ws = ctx.config.websocket
    if not ws.cert_file:
        return None
    try:
        return TlsProvider(ctx.config.replace(tls=TlsConfig(ws.cert_file, ws.key_file)))
    except ConfigError as exc:
        raise ConfigError(ctx.config.source, "websocket", exc.problem) from None


class WebSocketSession:
    """One accepted connection: the event feed plus the request loop."""

    def __init__(
        self,
        ctx: ServiceContext,
        config: WebsocketConfig,
        ws: WebSocketConnection,
        account: AccountRecord,
        cache: feed.EventCache,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._ctx = ctx
        self._ws = ws
        self._account = account
        self._cache = cache
        self._log = log
        self._api = Api(ctx.store, account.id)
        self._limits = p.Limits(config.max_page_size, config.max_wait_seconds)
        self._max_waits = config.max_waits_per_connection
        self._waits = 0
        self._scope = trio.CancelScope()
        self.requests = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(p.encode(message))

    async def send_text(self, text: str) -> None:
        """Send one frame; a vanished client ends the session."""
        try:
            await self._ws.send_message(text)
        except ConnectionClosed:
            self._scope.cancel()
            await trio.lowlevel.checkpoint()

    async def run(self, channel: trio.MemoryReceiveChannel[Any]) -> str:
        reason = "client closed"
        with self._scope:
            async with trio.open_nursery() as nursery:
                await self.send(p.hello_event(self._account.address, __version__))
                nursery.start_soon(self._feed, channel)
                nursery.start_soon(self._stop_on_shutdown)
                reason = await self._requests(nursery)
                nursery.cancel_scope.cancel()
        return reason

    async def _feed(self, channel: trio.MemoryReceiveChannel[Any]) -> None:
        await feed.follow(self._ctx.store, self._account.id, channel, self._cache, self.send_text)
        # The store stopped under us: nothing more will come.
        with trio.move_on_after(CLOSE_SECONDS):
            await self._ws.aclose(INTERNAL_ERROR, "store stopped")
        self._scope.cancel()

    async def _stop_on_shutdown(self) -> None:
        await self._ctx.shutdown.event.wait()
        with trio.move_on_after(CLOSE_SECONDS):
            await self._ws.aclose(GOING_AWAY, "server shutting down")
        self._scope.cancel()

    async def _requests(self, nursery: trio.Nursery) -> str:
        while True:
            try:
                text = await self._ws.get_message()
            except ConnectionClosed as exc:
                return f"closed ({exc.reason.code if exc.reason else 'no code'})"
            self.requests += 1
            try:
                request = p.parse_request(text, self._limits)
            except p.RequestError as exc:
                await self.send(exc.reply())
                continue
            if isinstance(request.operation, p.Wait):
                if self._waits >= self._max_waits:
                    await self.send(
                        p.error_reply(
                            request.id,
                            "too_many_waits",
                            f"at most {self._max_waits} waits may be open at once",
                        )
                    )
                    continue
                self._waits += 1
                nursery.start_soon(self._answer_wait, request)
                continue
            await self._answer(request)

    async def _answer(self, request: p.Request) -> None:
        try:
            result = await self._api.run(request.operation)
        except ApiError as exc:
            await self.send(p.error_reply(request.id, exc.code, exc.message))
        else:
            await self.send(p.result_reply(request.id, result))

    async def _answer_wait(self, request: p.Request) -> None:
        try:
            await self._answer(request)
        finally:
            self._waits -= 1


async def _authenticate(
    ctx: ServiceContext, request: WebSocketRequest, peer: net.Peer
) -> AccountRecord | None:
    """The account of the handshake's Basic credentials; the request is
    rejected (and None returned) on any failure."""
    if request.path.partition("?")[0] != PATH:
        await request.reject(404, body=b"not found: the API is at /\n")
        return None
    credentials = p.basic_credentials(request.headers)
    account = None
    if credentials is not None:
        user, password = credentials
        try:
            account = await ctx.auth.verify(user, password, peer_ip=peer.ip)
        except TemporaryFailure:
            await request.reject(503, body=b"temporarily unavailable, try again later\n")
            return None
    if account is None:
        await request.reject(
            401,
            extra_headers=[(b"WWW-Authenticate", REALM)],
            body=b"authentication required (HTTP Basic, an account's address and password)\n",
        )
    return account


async def serve(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    config = ctx.config.websocket
    tls = await trio.to_thread.run_sync(_tls_provider, ctx)
    if tls is not None:
        ctx.other_tls.append(tls)  # SIGHUP reloads it with [tls]'s
    warn_if_exposed(config.listen, tls is not None)
    limits = net.ConnectionLimits(config.max_connections, config.max_connections_per_ip)
    cache = feed.EventCache(ctx.store)

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        log = session_logger(logger, peer.session_id)
        async with trio.open_nursery() as nursery:
            # The nursery holds trio-websocket's reader task for this stream.
            request: WebSocketRequest | None = None
            with trio.move_on_after(config.handshake_timeout_seconds):
                request = await wrap_server_stream(
                    nursery,
                    stream,
                    message_queue_size=MESSAGE_QUEUE_SIZE,
                    max_message_size=config.max_request_bytes,
                )
            if request is None:  # no upgrade request in time
                nursery.cancel_scope.cancel()
                return
            try:
                # Outside the handshake timeout: a throttled failure is
                # answered late (auth/throttle.py), but still with a 401.
                account = await _authenticate(ctx, request, peer)
                if account is None:
                    nursery.cancel_scope.cancel()
                    return
                # Subscribed before the client hears "hello": every change
                # from then on reaches it.
                channel = ctx.store.subscribe(account.id)
                ws = await request.accept()
            except ConnectionClosed:
                log.info("websocket client left during the handshake peer=%s", peer.ip)
                nursery.cancel_scope.cancel()
                return
            log.info("websocket login account=%r peer=%s", account.address, peer.ip)
            session = WebSocketSession(ctx, config, ws, account, cache, log)
            reason = "error"
            try:
                reason = await session.run(channel)
            finally:
                with trio.move_on_after(CLOSE_SECONDS, shield=True):
                    await ws.aclose()
                log.info(
                    "websocket session end account=%r requests=%d reason=%s",
                    account.address,
                    session.requests,
                    reason,
                )
                nursery.cancel_scope.cancel()

    await net.serve_endpoints(
        "websocket",
        handler,
        config.listen,
        tls=tls,
        limits=limits,
        refuse=_refuse,
        task_status=task_status,
    )
