"""trio adapter for IMAP: sockets, literals, STARTTLS, AUTHENTICATE, IDLE,
the store's change channel and the autologout timer.

Everything IMAP decides is in the PURE modules (framing, grammar, protocol,
responses, mailbox_view, search); store calls are in handlers.py.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import trio

from mailstack import net
from mailstack.auth import sasl
from mailstack.imap import commands as c
from mailstack.imap import quota, responses, sorting
from mailstack.imap.compress import DeflateStream
from mailstack.imap.expunge_history import prune_forever
from mailstack.imap.framing import Continue, Framer, Refused
from mailstack.imap.grammar import ParseError, TaggedParseError, command
from mailstack.imap.handlers import CommandFailed, Handlers, RecordCache
from mailstack.imap.modseq import enables_condstore
from mailstack.imap.protocol import NO_EXPUNGE_AFTER, SessionState, Settings, State
from mailstack.logs import session_logger
from mailstack.service import ServiceContext
from mailstack.store.records import AccountRecord, Change, StoreError, TemporaryFailure

logger = logging.getLogger("mailstack.imap")

RECEIVE_BYTES = 65536
# Output is gathered and sent in chunks of about this size.
SEND_CHUNK = 65536
# After the change channel ends (store stopping, or we fell behind) wait this
# long before subscribing again.
RESUBSCRIBE_SECONDS = 1.0
# Without the store's watcher, an idling session polls this often.
POLL_SECONDS = 0.5


class _Gone(Exception):
    """The peer went away (send failed or EOF)."""


class AccountSlots:
    """Open authenticated connections per account (config.imap.max_connections_per_account;
    0 means unlimited, as for the other connection limits)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: Counter[int] = Counter()

    def take(self, account_id: int) -> bool:
        if self.limit and self.counts[account_id] >= self.limit:
            return False
        self.counts[account_id] += 1
        return True

    def release(self, account_id: int) -> None:
        self.counts[account_id] -= 1
        if self.counts[account_id] <= 0:
            del self.counts[account_id]


def _refuse(peer: net.Peer) -> bytes:
    return b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n"


class Connection:
    def __init__(
        self,
        ctx: ServiceContext,
        slots: AccountSlots,
        cache: RecordCache,
        stream: trio.abc.Stream,
        peer: net.Peer,
    ) -> None:
        config = ctx.config.imap
        self.ctx = ctx
        self.config = config
        self.slots = slots
        self.stream = stream
        self.peer = peer
        self.log = session_logger(logger, peer.session_id)
        self.framer = Framer(config.max_line_bytes, config.max_literal_bytes)
        self.session = SessionState(
            Settings(
                max_literal_bytes=config.max_literal_bytes,
                allow_plaintext_login=config.allow_plaintext_login,
                tls_available=True,
            ),
            tls_active=peer.implicit_tls,
        )
        self.handlers = Handlers(ctx, self.session, self.send, cache)
        self.lock = trio.StrictFIFOLock()
        self.out = bytearray()
        self.idling = False
        self.account: AccountRecord | None = None
        self.nursery: trio.Nursery | None = None
        self.known_uidnext = 0  # UIDNEXT when NOOP last compared with the store
        self.bad_commands = 0

    # -- output ---------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        self.out += data
        if len(self.out) >= SEND_CHUNK:
            await self.flush_out()

    async def flush_out(self) -> None:
        async with self.lock:
            if not self.out:
                return
            data = bytes(self.out)
            self.out.clear()
            # A client that stops reading must not hold its session (and the
            # output queued for it) forever: the autologout timer only runs
            # while we wait for input.
            with trio.move_on_after(self.config.send_timeout_seconds or math.inf) as stalled:
                sent = await net.send_all(self.stream, data)
            if stalled.cancelled_caught:
                self.log.warning(
                    "imap client read nothing for %.0f s (send_timeout_seconds): closing",
                    self.config.send_timeout_seconds,
                )
                raise _Gone
            if not sent:
                raise _Gone

    def capability_text(self) -> str:
        return " ".join(self.session.capabilities())

    # -- input ----------------------------------------------------------------
    async def receive(self, *, between_commands: bool = False) -> None:
        """More bytes from the client, within the autologout time (RFC 9051 5.4).

        ``between_commands``: no command is half received, so a graceful
        server stop may end the wait (with BYE, RFC 9051 7.1.5)."""
        await self.flush_out()
        data = b""
        stopping = False
        with trio.move_on_after(self.config.idle_timeout_seconds) as scope:
            if between_commands:
                with self.ctx.shutdown.idle() as stop:
                    data = await net.receive_some(self.stream, RECEIVE_BYTES)
                stopping = stop.cancelled_caught
            else:
                data = await net.receive_some(self.stream, RECEIVE_BYTES)
        if scope.cancelled_caught or stopping:
            reason = "Server shutting down" if stopping else "Autologout; idle for too long"
            self.log.info("imap %s", "shutdown" if stopping else "autologout")
            await self.send(responses.untagged(f"BYE {reason}"))
            await self.flush_out()
            raise _Gone
        if not data:
            raise _Gone
        self.framer.feed(data)

    async def read_line(self, *, between_commands: bool = False) -> bytes:
        while True:
            line = self.framer.next_line()
            if line is not None:
                return line
            await self.receive(between_commands=between_commands)

    # -- the session ------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    await self.send(
                        responses.untagged(
                            f"OK [CAPABILITY {self.capability_text()}] "
                            f"{self.ctx.config.hostname} IMAP ready"
                        )
                    )
                    await self.loop()
                except _Gone:
                    pass
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if self.account is not None:
                self.slots.release(self.account.id)

    async def loop(self) -> None:
        while True:
            event = self.framer.next_event()
            if event is None:
                await self.receive(between_commands=self.framer.idle)
                continue
            if isinstance(event, Continue):
                await self.send(b"+ Ready for literal data\r\n")
                await self.flush_out()
                continue
            if isinstance(event, Refused):
                if event.fatal:
                    await self.send(responses.untagged(f"BYE [{event.code}] {event.text}"))
                    await self.flush_out()
                    return
                tag = event.tag.decode("utf-8", "replace") if event.tag else "*"
                status = "NO" if event.code else "BAD"
                await self.send(responses.tagged(tag, status, event.text, event.code))
                if not await self.count_bad():
                    return
                continue
            try:
                tagged = command(event, self.config.max_nesting_depth)
            except TaggedParseError as exc:
                await self.send(responses.tagged(exc.tag, "BAD", f"Syntax error: {exc}"))
                if not await self.count_bad():
                    return
                continue
            except ParseError as exc:
                await self.send(responses.untagged(f"BAD Syntax error: {exc}"))
                if not await self.count_bad():
                    return
                continue
            if not await self.dispatch(tagged):
                return

    async def count_bad(self) -> bool:
        """Count a refused command; False (after BYE) once the session has
        sent ``max_bad_commands`` of them: a client flooding garbage is either
        broken or probing, and either way should not keep the slot."""
        self.bad_commands += 1
        limit = self.config.max_bad_commands
        if not limit or self.bad_commands < limit:
            return True
        self.log.warning("imap closing: %d bad commands (max_bad_commands)", self.bad_commands)
        await self.send(responses.untagged("BYE Too many bad commands"))
        await self.flush_out()
        return False

    async def dispatch(self, tagged: c.Tagged) -> bool:
        """Run one command; False ends the connection."""
        tag, cmd = tagged.tag, tagged.command
        problem = self.session.check_state(cmd)
        if problem is not None:
            await self.send(responses.tagged(tag, "BAD", problem))
            return await self.count_bad()
        if enables_condstore(cmd):  # RFC 7162 3.1
            self.session.enabled.add("CONDSTORE")
        try:
            keep_going = await self.execute(tag, cmd)
        except CommandFailed as exc:
            await self.send(responses.tagged(tag, exc.status, exc.text, exc.code))
            return True
        except TemporaryFailure:
            await self.send(
                responses.tagged(tag, "NO", "Storage temporarily unavailable", "UNAVAILABLE")
            )
            return True
        except StoreError as exc:
            self.log.info("imap store error: %s", type(exc).__name__)
            await self.send(responses.tagged(tag, "NO", "Operation failed", "SERVERBUG"))
            return True
        return keep_going

    async def execute(self, tag: str, cmd: c.Command) -> bool:
        h = self.handlers
        code = ""
        if isinstance(cmd, c.Capability):
            await self.send(responses.untagged(f"CAPABILITY {self.capability_text()}"))
            text = "Capability completed"
        elif isinstance(cmd, (c.Noop, c.Check)):
            await self.catch_up()
            text = "Completed"
        elif isinstance(cmd, c.Logout):
            await self.send(responses.untagged("BYE Logging out"))
            await self.send(responses.tagged(tag, "OK", "Logout completed"))
            await self.flush_out()
            self.session.state = State.LOGOUT
            return False
        elif isinstance(cmd, c.StartTls):
            return await self.starttls(tag)
        elif isinstance(cmd, c.Login):
            if not self.session.login_allowed:
                raise CommandFailed("Use STARTTLS first", "PRIVACYREQUIRED")
            account = await h.login(cmd.username, cmd.password, self.peer.ip)
            await self.logged_in(tag, account)
            return True
        elif isinstance(cmd, c.Authenticate):
            await self.authenticate(tag, cmd)
            return True
        elif isinstance(cmd, c.Idle):
            await self.idle(tag)
            return True
        elif isinstance(cmd, c.Id):
            text = await h.id()
        elif isinstance(cmd, c.Enable):
            text = await h.enable(cmd)
        elif isinstance(cmd, c.Select):
            code, text = await h.select(cmd)
        elif isinstance(cmd, c.Create):
            text = await h.create(cmd)
        elif isinstance(cmd, c.Delete):
            text = await h.delete(cmd)
        elif isinstance(cmd, c.Rename):
            text = await h.rename(cmd)
        elif isinstance(cmd, c.Subscribe):
            text = await h.subscribe(cmd)
        elif isinstance(cmd, c.ListCmd):
            text = await h.list(cmd)
        elif isinstance(cmd, c.Namespace):
            text = await h.namespace()
        elif isinstance(cmd, c.Status):
            text = await h.status(cmd)
        elif isinstance(cmd, c.Append):
            code, text = await h.append(cmd)
        elif isinstance(cmd, c.Close):
            text = await h.close(expunge=True)
        elif isinstance(cmd, c.Unselect):
            text = await h.close(expunge=False)
        elif isinstance(cmd, c.Expunge):
            text = await h.expunge(cmd)
        elif isinstance(cmd, c.Search):
            text = await h.search(cmd, tag)
        elif isinstance(cmd, c.Fetch):
            text = await h.fetch(cmd)
        elif isinstance(cmd, c.Store):
            code, text = await h.store_flags(cmd)
        elif isinstance(cmd, c.Sort):
            text = await sorting.sort(h, cmd, tag)
        elif isinstance(cmd, c.Thread):
            text = await sorting.thread_command(h, cmd)
        elif isinstance(cmd, c.GetQuota):
            text = await quota.getquota(h, cmd)
        elif isinstance(cmd, c.GetQuotaRoot):
            text = await quota.getquotaroot(h, cmd)
        elif isinstance(cmd, c.SetQuota):
            text = await quota.setquota(h, cmd)
        elif isinstance(cmd, c.Compress):
            return await self.compress(tag, cmd)
        else:
            code, text = await h.copy(cmd)
        by_number = isinstance(cmd, NO_EXPUNGE_AFTER) and not getattr(cmd, "uid", True)
        await h.flush(expunges_allowed=not by_number)
        await self.send(responses.tagged(tag, "OK", text, code))
        return True

    async def starttls(self, tag: str) -> bool:
        if self.session.tls_active:
            raise CommandFailed("TLS already active", status="BAD")
        await self.send(responses.tagged(tag, "OK", "Begin TLS negotiation now"))
        await self.flush_out()
        # RFC 9051 6.2.1 / RFC 3207 4.2: anything pipelined after STARTTLS
        # was sent in the clear and must not be acted on.
        self.framer = Framer(self.config.max_line_bytes, self.config.max_literal_bytes)
        with trio.move_on_after(net.HANDSHAKE_SECONDS):
            try:
                self.stream = await net.start_tls(self.stream, self.ctx.tls)
            except trio.BrokenResourceError as exc:
                self.log.info("imap STARTTLS handshake failed: %s", exc.__cause__ or exc)
                return False
            self.session.tls_active = True
            return True
        self.log.info("imap STARTTLS handshake timed out")
        return False

    async def compress(self, tag: str, cmd: c.Compress) -> bool:
        """RFC 4978 3: deflate both ways from the octet after the tagged OK."""
        if cmd.mechanism != "DEFLATE":
            raise CommandFailed("Unknown compression mechanism", status="BAD")
        if isinstance(self.stream, DeflateStream):
            raise CommandFailed("Compression is already active", "COMPRESSIONACTIVE")
        await self.send(responses.tagged(tag, "OK", "DEFLATE active"))
        await self.flush_out()
        # A client waits for the OK before it compresses (RFC 4978 3), so
        # nothing it sent before can belong to the compressed stream.
        self.framer = Framer(self.config.max_line_bytes, self.config.max_literal_bytes)
        self.stream = DeflateStream(self.stream)
        return True

    async def authenticate(self, tag: str, cmd: c.Authenticate) -> None:
        if cmd.mechanism in sasl.PLAINTEXT_MECHANISMS and not self.session.login_allowed:
            raise CommandFailed("Use STARTTLS first", "PRIVACYREQUIRED")
        try:
            exchange = sasl.begin(cmd.mechanism, plaintext_allowed=self.session.login_allowed)
            result = exchange.start(cmd.initial)
            while isinstance(result, sasl.Challenge):
                await self.send(f"+ {result.text}\r\n".encode())
                line = await self.read_line()
                result = exchange.respond(line.decode("utf-8", "replace"))
        except sasl.SaslError as exc:
            status = "BAD" if exc.cancelled else "NO"
            code = "" if exc.cancelled else "AUTHENTICATIONFAILED"
            await self.send(responses.tagged(tag, status, exc.reason, code))
            return
        account = await self.ctx.auth.verify_credentials(result, peer_ip=self.peer.ip)
        await self.logged_in(tag, account)

    async def logged_in(self, tag: str, account: AccountRecord | None) -> None:
        if account is None:
            await self.send(
                responses.tagged(tag, "NO", "Authentication failed", "AUTHENTICATIONFAILED")
            )
            return
        if not self.slots.take(account.id):
            await self.send(responses.tagged(tag, "NO", "Too many connections", "LIMIT"))
            return
        self.account = account
        self.handlers.account = account
        self.session.state = State.AUTHENTICATED
        self.log.info("imap login account=%d", account.id)
        assert self.nursery is not None
        self.nursery.start_soon(self.follow_changes, account.id)
        await self.send(
            responses.tagged(tag, "OK", "Logged in", f"CAPABILITY {self.capability_text()}")
        )

    async def follow_changes(self, account_id: int) -> None:
        """Feed the store's change channel into the mailbox view; push while idling."""
        while True:
            try:
                channel = self.ctx.store.subscribe(account_id)
            except RuntimeError:
                # The store's watcher does not run in this process: compare
                # with the database instead, often enough for IDLE's promise.
                await self.poll_changes()
                return
            with channel:
                async for change in channel:
                    await self.on_change(change)
            await self.resync()
            await trio.sleep(RESUBSCRIBE_SECONDS)

    async def on_change(self, change: Change) -> None:
        self.handlers.note_change(change)
        await self.on_idle_news()

    async def poll_changes(self) -> None:
        while True:
            await trio.sleep(POLL_SECONDS)
            if self.idling:
                await self.resync()
                await self.on_idle_news()

    async def on_idle_news(self) -> None:
        if self.idling:
            await self.handlers.flush(expunges_allowed=True)
            await self.flush_out()

    async def catch_up(self) -> None:
        """NOOP is how clients poll (RFC 9051 6.1.2): if the store already has
        changes the change channel has not brought yet, read them now."""
        view, mailbox = self.handlers.view, self.handlers.mailbox
        if view is None or mailbox is None or self.account is None:
            return
        current = await self.ctx.store.get_mailbox(self.account.id, mailbox.name)
        if current is None:
            return
        if not view.count_agrees(current.messages) or current.uidnext != self.known_uidnext:
            self.known_uidnext = current.uidnext
            await self.resync()

    async def resync(self) -> None:
        """After changes may have been dropped: compare the view's UIDs with the
        store (new and expunged messages; flag changes need the channel)."""
        view = self.handlers.view
        if view is None:
            return
        try:
            present = {uid for uid, _ in await self.ctx.store.list_uid_flags(view.mailbox_id)}
        except StoreError:
            return
        for uid in view.uids.to_list():
            if uid not in present:
                view.message_expunged(uid)
        for uid in present:
            view.message_added(uid)

    async def idle(self, tag: str) -> None:
        """RFC 2177: push changes until the client sends DONE."""
        await self.send(b"+ idling\r\n")
        await self.handlers.flush(expunges_allowed=True)
        self.idling = True
        try:
            line = await self.read_line(between_commands=True)
        finally:
            self.idling = False
        if line.upper() != b"DONE":
            await self.send(responses.tagged(tag, "BAD", "Expected DONE"))
            return
        await self.handlers.flush(expunges_allowed=True)
        await self.send(responses.tagged(tag, "OK", "IDLE terminated"))


async def serve(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``[imap] listen`` (STARTTLS) and ``tls_listen`` (implicit TLS, port 993)."""
    config = ctx.config.imap
    limits = net.ConnectionLimits(config.max_connections, config.max_connections_per_ip)
    slots = AccountSlots(config.max_connections_per_account)
    cache = RecordCache()

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        await Connection(ctx, slots, cache, stream, peer).run()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prune_forever, ctx.store, config.expunged_retention_days)
        try:
            await net.serve_plain_and_tls(
                "imap",
                handler,
                config.listen,
                config.tls_listen,
                tls=ctx.tls,
                limits=limits,
                refuse=_refuse,
                task_status=task_status,
            )
        finally:
            nursery.cancel_scope.cancel()
