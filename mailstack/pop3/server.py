"""trio adapter for the POP3 core: sockets, STLS, the store, the autologout.

Everything POP3 decides is in ``protocol.py``; this file only answers the
core's events (credentials via the shared Authenticator, message content and
deletions via the Store, TLS via net.start_tls) and moves bytes.
"""

from __future__ import annotations

import logging

import trio

from mailstack import net
from mailstack.logs import session_logger
from mailstack.pop3.locks import MaildropLocks
from mailstack.pop3.maildrop import Maildrop, MaildropMessage
from mailstack.pop3.protocol import (
    Authenticate,
    CloseConnection,
    CommitDeletions,
    Event,
    FetchMessage,
    LoginFailure,
    Pop3Protocol,
    Settings,
    StartTls,
)
from mailstack.service import ServiceContext
from mailstack.store.records import (
    Change,
    ChangeKind,
    MailboxRecord,
    NotFound,
    StoreError,
    TemporaryFailure,
)

logger = logging.getLogger("mailstack.pop3")

RECEIVE_BYTES = 65536
# Clients retrieve a maildrop in order (fetchmail, getmail, the bench), so
# RETR/TOP of message n also reads the next ones in the same transaction.
# Bounded in count and bytes: every open session may hold one batch.
READ_AHEAD_MESSAGES = 32
READ_AHEAD_BYTES = 256 * 1024
# How long the autologout notice may take to send before we just close.
GOODBYE_SECONDS = 1.0


def _refuse(peer: net.Peer) -> bytes:
    return b"-ERR [SYS/TEMP] too many connections, try again later\r\n"


class Session:
    """One connection.  The maildrop lock, once taken, is released whatever
    way the session ends (QUIT, drop, timeout, error)."""

    def __init__(
        self, ctx: ServiceContext, locks: MaildropLocks, stream: trio.abc.Stream, peer: net.Peer
    ) -> None:
        config = ctx.config.pop3
        self._ctx = ctx
        self._locks = locks
        self._stream = stream
        self._peer = peer
        self._log = session_logger(logger, peer.session_id)
        self._idle_seconds = config.idle_timeout_seconds
        self._max_bad_commands = config.max_bad_commands
        self._core = Pop3Protocol(
            Settings(
                max_line_bytes=config.max_line_bytes,
                max_commands=config.max_commands,
                allow_plaintext_login=config.allow_plaintext_login,
                tls_available=True,
                tls_active=peer.implicit_tls,
                max_bad_commands=config.max_bad_commands,
            ),
            greeting=f"{ctx.config.hostname} POP3 ready",
        )
        self._account_id: int | None = None
        self._inbox: MailboxRecord | None = None
        self._changes: trio.MemoryReceiveChannel[Change] | None = None
        self._ahead: dict[int, bytes] = {}  # content_id -> raw, read ahead

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._changes is not None:
                self._changes.close()
            await self._release_maildrop()

    async def _release_maildrop(self) -> None:
        """Give the maildrop lock back, once (whichever way the session ends)."""
        if self._account_id is None:
            return
        account_id, self._account_id = self._account_id, None
        # Shielded: the session may be ending by cancellation.
        with trio.CancelScope(shield=True):
            await self._locks.release(account_id)

    async def _loop(self) -> None:
        core = self._core
        while True:
            event = core.next_event()
            if isinstance(event, CloseConnection):
                # The maildrop is given back before the last reply (QUIT's
                # +OK) goes out: a client that has it may log in again at
                # once, here or on another host, and must find it free.
                await self._release_maildrop()
            out = core.data_to_send()
            sent = not out
            # RFC 1939 3: the autologout timer covers a client that stops
            # talking and also one that stops reading our replies.
            stopping = False
            with trio.move_on_after(self._idle_seconds) as idle:
                if out:
                    sent = await net.send_all(self._stream, out)
                if sent and event is None:
                    # Waiting for the next command: a graceful server stop
                    # may end the wait (ctx.shutdown), work in progress may not.
                    with self._ctx.shutdown.idle() as stop:
                        data = await net.receive_some(self._stream, RECEIVE_BYTES)
                    stopping = stop.cancelled_caught
                    if not stopping:
                        core.receive_data(data)
            if idle.cancelled_caught or stopping:
                if stopping:
                    self._log.info("pop3 session closed: server shutting down")
                    core.shutting_down()
                else:
                    self._log.info("pop3 autologout after %.0f s idle", self._idle_seconds)
                    core.timed_out()
                with trio.move_on_after(GOODBYE_SECONDS):
                    await net.send_all(self._stream, core.data_to_send())
                return
            if not sent:
                return
            if event is None:
                continue
            if isinstance(event, CloseConnection):
                if self._max_bad_commands and core.bad_commands >= self._max_bad_commands:
                    self._log.warning(
                        "pop3 closing: %d bad commands (max_bad_commands)", core.bad_commands
                    )
                return
            if not await self._answer(event):
                return

    async def _answer(self, event: Event) -> bool:
        """Act on one event; False ends the session (failed TLS handshake)."""
        if isinstance(event, Authenticate):
            await self._authenticate(event)
        elif isinstance(event, FetchMessage):
            await self._fetch(event)
        elif isinstance(event, CommitDeletions):
            await self._commit(event)
        elif isinstance(event, StartTls):
            return await self._start_tls()
        return True

    async def _start_tls(self) -> bool:
        with trio.move_on_after(net.HANDSHAKE_SECONDS):
            try:
                self._stream = await net.start_tls(self._stream, self._ctx.tls)
            except trio.BrokenResourceError as exc:
                self._log.info("pop3 STLS handshake failed: %s", exc.__cause__ or exc)
                return False
            self._core.tls_started()
            return True
        self._log.info("pop3 STLS handshake timed out")
        return False

    async def _authenticate(self, event: Authenticate) -> None:
        creds = event.credentials
        try:
            account = await self._ctx.auth.verify_credentials(creds, peer_ip=self._peer.ip)
        except TemporaryFailure as exc:
            self._log.warning("pop3 login impossible, store unavailable: %s", exc)
            self._core.login_failed(LoginFailure.SYS_TEMP)
            return
        if account is None:
            self._core.login_failed(LoginFailure.AUTH)
            return
        try:
            locked = await self._locks.acquire(account.id)
        except StoreError as exc:
            self._log.warning("pop3 cannot lock maildrop user=%r: %s", account.address, exc)
            self._core.login_failed(LoginFailure.SYS_TEMP)
            return
        if not locked:
            self._log.info("pop3 maildrop in use user=%r", account.address)
            self._core.login_failed(LoginFailure.IN_USE)
            return
        try:
            maildrop = await self._open_maildrop(account.id)
        except StoreError as exc:
            await self._locks.release(account.id)
            self._log.warning("pop3 cannot open maildrop user=%r: %s", account.address, exc)
            self._core.login_failed(LoginFailure.SYS_TEMP)
            return
        self._account_id = account.id
        self._log.info("pop3 login user=%r messages=%d", account.address, len(maildrop))
        self._core.authenticated(maildrop)

    async def _open_maildrop(self, account_id: int) -> Maildrop:
        """Snapshot the INBOX (RFC 1939 3: fixed for the session).  The change
        subscription is taken first so an IMAP expunge racing with the
        snapshot is still seen."""
        store = self._ctx.store
        inbox = await store.get_mailbox(account_id, "INBOX")
        if inbox is None:
            raise NotFound("the account has no INBOX")
        self._watch_changes(account_id)
        records = await store.list_messages(inbox.id)
        self._inbox = inbox
        return Maildrop(inbox.uidvalidity, [(r.uid, r.size, r.content_id) for r in records])

    def _watch_changes(self, account_id: int) -> None:
        try:
            self._changes = self._ctx.store.subscribe(account_id)
        except RuntimeError:
            # The store's watcher is not running in this process (Store.run;
            # subscribe is the one method that needs it).  A message another
            # session expunges is then noticed only once its content is gone.
            self._changes = None

    async def _note_expunges(self, maildrop: Maildrop) -> None:
        """Apply what other sessions expunged since the last look."""
        if self._changes is None or self._inbox is None:
            return
        while True:
            try:
                change = self._changes.receive_nowait()
            except trio.WouldBlock:
                return
            except (trio.EndOfChannel, trio.ClosedResourceError):
                # We fell behind and changes were dropped (watcher.py):
                # subscribe again, then compare the snapshot with the INBOX.
                self._changes.close()
                self._watch_changes(self._inbox.account_id)
                present = {r.uid for r in await self._ctx.store.list_messages(self._inbox.id)}
                for uid in maildrop.uids():
                    if uid not in present:
                        maildrop.mark_gone(uid)
                return
            if (
                change.kind is ChangeKind.MESSAGE_EXPUNGED
                and change.mailbox_id == self._inbox.id
                and change.uid is not None
            ):
                maildrop.mark_gone(change.uid)

    async def _fetch(self, event: FetchMessage) -> None:
        maildrop = self._core.maildrop
        assert maildrop is not None
        try:
            await self._note_expunges(maildrop)
            if maildrop.is_gone(event.message):
                self._core.message_fetched(None)
                return
            raw = await self._content(maildrop, event.message)
        except NotFound:
            self._core.message_fetched(None)
        except StoreError as exc:
            self._log.warning("pop3 read failed uid=%d: %s", event.message.uid, exc)
            self._core.fetch_failed()
        else:
            self._core.message_fetched(raw)

    async def _content(self, maildrop: Maildrop, message: MaildropMessage) -> bytes:
        raw = self._ahead.pop(message.content_id, None)
        if raw is None:
            batch = maildrop.read_ahead(message, READ_AHEAD_MESSAGES, READ_AHEAD_BYTES)
            self._ahead = await self._ctx.store.read_contents([m.content_id for m in batch])
            raw = self._ahead.pop(message.content_id, None)
            if raw is None:
                raise NotFound(f"message content {message.content_id} is gone")
        return raw

    async def _commit(self, event: CommitDeletions) -> None:
        """RFC 1939 6 UPDATE: remove exactly the messages this session marked.
        Ones another session already expunged are simply no longer there."""
        assert self._inbox is not None
        if not self._locks.holds(self._inbox.account_id):
            # The lock lapsed (store unreachable too long) and another
            # session may own the maildrop now: its view wins.
            self._log.warning("pop3 update refused: the maildrop lock was lost")
            self._core.deletions_committed(False)
            return
        store = self._ctx.store
        try:
            await store.set_flags(self._inbox.id, event.uids, "add", ["\\Deleted"])
            removed = await store.expunge(self._inbox.id, event.uids)
        except StoreError as exc:
            self._log.warning("pop3 update failed: %s", exc)
            self._core.deletions_committed(False)
            return
        self._log.info("pop3 update removed=%d marked=%d", len(removed), len(event.uids))
        self._core.deletions_committed(True)


async def serve(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``[pop3] listen`` (STLS) and ``tls_listen`` (implicit TLS, port 995)."""
    config = ctx.config.pop3
    limits = net.ConnectionLimits(config.max_connections, config.max_connections_per_ip)
    locks = MaildropLocks(ctx.store, config.lock_expiry_seconds)

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        await Session(ctx, locks, stream, peer).run()

    async with trio.open_nursery() as renewal:
        renewal.start_soon(locks.keep_alive)
        await net.serve_plain_and_tls(
            "pop3",
            handler,
            config.listen,
            config.tls_listen,
            tls=ctx.tls,
            limits=limits,
            refuse=_refuse,
            task_status=task_status,
        )
        # Every session has ended (and released its lock).
        renewal.cancel_scope.cancel()
