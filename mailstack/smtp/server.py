"""trio adapter for the SMTP core: the MX listener and the submission listeners.

Everything SMTP decides is in ``protocol.py``; this file moves bytes, runs the
RFC 5321 4.5.3.2 timers as cancel scopes, does STARTTLS via net.start_tls,
and answers the core's events from the Authenticator and ``delivery``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from functools import partial

import trio

from mailstack import net
from mailstack.capture.delivery import Capture
from mailstack.config import SmtpConfig
from mailstack.logs import session_logger
from mailstack.service import ServiceContext
from mailstack.smtp import delivery, replies
from mailstack.smtp.mailauth import MailAuthentication
from mailstack.smtp.protocol import (
    Authenticate,
    CheckRecipient,
    CheckSender,
    CloseConnection,
    Event,
    MessageReceived,
    Settings,
    SmtpProtocol,
    Stall,
    StartTls,
    State,
)
from mailstack.store.records import TemporaryFailure

logger = logging.getLogger("mailstack.smtp")

RECEIVE_BYTES = 65536


def _refuse(peer: net.Peer) -> bytes:
    return replies.Reply(421, "4.7.0", "too many connections, try again later").wire


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class SmtpSession:
    def __init__(
        self,
        ctx: ServiceContext,
        config: SmtpConfig,
        stream: trio.abc.Stream,
        peer: net.Peer,
        *,
        submission: bool,
        recipients: delivery.RecipientCache,
        mailauth: MailAuthentication,
        settings: Settings,
        capture: Capture | None = None,
    ) -> None:
        self._ctx = ctx
        self._mailauth = mailauth
        # Capture mode (test mail server): recipients and messages go to
        # capture accounts instead of local delivery; nothing is relayed.
        self._capture = capture
        self._recipients = recipients
        self._config = config
        self._stream = stream
        self._peer = peer
        self._submission = submission
        self._hostname = ctx.config.hostname
        self._full_reply = (
            replies.MAILBOX_FULL_PERMANENT
            if config.over_quota == "permanent"
            else replies.MAILBOX_FULL
        )
        self._log = session_logger(logger, peer.session_id)
        self._account_id: int | None = None
        self._messages = 0
        # When the wait on the client must end (RFC 5321 4.5.3.2); the
        # listener's watchdog (expire_sessions) interrupts the wait past it.
        self.deadline = math.inf
        # The socket under any TLS: interrupting its wait ends the session
        # (_interrupt) where a cancel scope would cost every session.
        self._transport = net.plain_transport(stream)
        self._interrupted = False
        # The run's clock, asked directly: trio.current_time() is three
        # calls deep, and a session asks about ten times.
        self._now = trio.lowlevel.current_clock().current_time
        self.idle = False  # waiting for the client's next command
        self._core = SmtpProtocol(settings)

    def _tls(self) -> tuple[str | None, str | None]:
        # The identity test first: isinstance against trio's stream classes
        # (abstract base classes) is a Python-level check, asked per message.
        if self._stream is not self._transport and isinstance(self._stream, trio.SSLStream):
            cipher = self._stream.cipher()
            return self._stream.version(), cipher[0] if cipher else None
        return None, None

    async def run(self) -> None:
        started = time.monotonic()
        reason = "error"
        try:
            reason = await self._loop()
        finally:
            if self._log.isEnabledFor(logging.INFO):  # the line's fields cost a little
                self._log_end(reason, time.monotonic() - started)

    def _log_end(self, reason: str, seconds: float) -> None:
        version, _ = self._tls()
        self._log.info(
            "%s session end peer=%s tls=%s user=%s messages=%d seconds=%.3f reason=%s",
            "submission" if self._submission else "smtp",
            self._peer.ip,
            version or "no",
            self._core.session.user or "-",
            self._messages,
            seconds,
            reason,
        )

    async def _loop(self) -> str:
        core = self._core
        # The listener's watchdog interrupts a wait on the client that passed
        # its deadline (RFC 5321 4.5.3.2), never a wait on the store: a number
        # to set per command instead of a trio deadline to move (_arm).  A
        # graceful stop interrupts too, but only a wait for a command.
        while True:
            event = core.next_event()
            out = core.data_to_send()
            if event is None:
                reading_data = core.reading_data
                self._arm(reading_data)
                between_commands = not reading_data
                if between_commands and self._ctx.shutdown.started:
                    if out and not await net.send_all(self._stream, out):
                        return self._gone()
                    break
                self.idle = between_commands
                if out:  # a reply, then the client's next command
                    data = await net.reply_and_receive(self._stream, out, RECEIVE_BYTES)
                else:
                    data = await net.receive_some(self._stream, RECEIVE_BYTES)
                self.idle = False
                if self._interrupted:
                    break
                core.receive_data(data)
                continue
            if out:
                self._arm(core.reading_data)
            if isinstance(event, CloseConnection):
                # The 221 (or 421): the close comes next, so no schedule
                # point between the two.
                if out and not await net.send_last(self._stream, out):
                    return self._gone()
                return event.reason
            if out and not await net.send_all(self._stream, out):
                return self._gone()
            if self._answer_at_once(event):
                continue
            self._disarm()  # the store's and the SASL layer's waits have no deadline
            if not await self._answer(event):
                return "TLS handshake failed"
        if self._ctx.shutdown.started and core.state is not State.CLOSED:
            # RFC 5321 3.8: 421 when the service is shutting down.
            core.shutting_down()
            reason = "shutdown"
        else:
            core.timed_out()
            reason = "timeout"
        with trio.move_on_after(1):
            await net.send_all(self._stream, core.data_to_send())
        return reason

    def _gone(self) -> str:
        """Why a send failed: the client went, or our interrupt stopped a
        send the client did not read (a timeout, or the server stopping)."""
        if not self._interrupted:
            return "client vanished"
        return "shutdown" if self._ctx.shutdown.started else "timeout"

    def _arm(self, reading_data: bool) -> None:
        """The next wait on the client ends within this phase's timeout."""
        config = self._config
        timeout = config.data_timeout_seconds if reading_data else config.command_timeout_seconds
        self.deadline = self._now() + timeout

    def _disarm(self) -> None:
        self.deadline = math.inf

    def expire(self, now: float) -> None:
        """The watchdog's check: end the session if its wait is overdue."""
        if now >= self.deadline:
            self._interrupt()

    def stop_if_idle(self) -> None:
        """A graceful stop began: end the session now if it waits for a
        command; a DATA transfer or a delivery in progress may finish."""
        if self.idle:
            self._interrupt()

    def _interrupt(self) -> None:
        # Only a wait on the socket ends; a session not waiting at this
        # moment (woken by data, not yet run) goes on: its deadline moves
        # with its next reply, or the next check finds it still overdue.
        if self._transport.interrupt():
            self._interrupted = True

    def _answer_at_once(self, event: Event) -> bool:
        """Answer what needs no waiting (the MX's sender, capture mode's
        recipients, a recipient the cache knows) without lifting the
        session's deadline."""
        if isinstance(event, CheckSender) and (not self._submission or self._capture is not None):
            self._core.answer(replies.SENDER_OK)  # only submission checks who sends
            return True
        if not isinstance(event, CheckRecipient):
            return False
        if self._capture is not None:
            known = self._capture.check_recipient(event.address)
        else:
            cached = delivery.cached_recipient(self._recipients, event.address, self._now())
            if cached is None:
                return False
            known = cached
        self._core.answer(known.reply, targets=known.targets)
        return True

    async def _answer(self, event: Event) -> bool:
        core = self._core
        if isinstance(event, CheckSender):
            core.answer(await self._check_sender(event))
        elif isinstance(event, CheckRecipient):  # not cached (_answer_at_once)
            remote = replies.RELAY_DENIED
            if self._submission:
                # With the queue on, other domains are accepted and queued
                # (delivery.hand_over); without it mail never leaves.
                queueing = self._ctx.config.outbound.enabled
                remote = replies.RECIPIENT_OK if queueing else replies.RELAY_NOT_CONFIGURED
            decision = await delivery.check_recipient(
                self._ctx.store,
                event.address,
                hostname=self._hostname,
                remote_reply=remote,
                cache=self._recipients,
                now=self._now(),
                full_reply=self._full_reply,
            )
            core.answer(decision.reply, targets=decision.targets)
        elif isinstance(event, Authenticate):
            await self._authenticate(event)
        elif isinstance(event, StartTls):
            return await self._start_tls(event)
        elif isinstance(event, MessageReceived):
            await self._deliver(event)
        elif isinstance(event, Stall):
            await trio.sleep(event.seconds)
            core.stall_over()
        return True

    async def _check_sender(self, event: CheckSender) -> replies.Reply:
        # Submission only (_answer_at_once answers the others).
        assert self._account_id is not None  # the core requires AUTH before MAIL
        return await delivery.check_sender(self._ctx.store, self._account_id, event.mail.sender)

    async def _authenticate(self, event: Authenticate) -> None:
        try:
            account = await self._ctx.auth.verify_credentials(
                event.credentials, peer_ip=self._peer.ip
            )
        except TemporaryFailure as exc:
            self._log.warning("submission auth impossible, store unavailable: %s", exc)
            self._core.auth_failed(replies.AUTH_TEMPORARY)
            return
        if account is None:
            self._log.info("submission auth failed user=%r", event.credentials.authcid)
            self._core.auth_failed()
            return
        self._account_id = account.id
        self._log.info("submission auth user=%r", account.address)
        self._core.auth_succeeded(account.address)

    async def _start_tls(self, event: StartTls) -> bool:
        if event.discarded:
            self._log.warning(
                "discarded %d plaintext octets pipelined after STARTTLS", event.discarded
            )
        # The 220 must reach the client before the handshake starts.
        if not await net.send_all(self._stream, self._core.data_to_send()):
            return False
        with trio.move_on_after(net.HANDSHAKE_SECONDS):
            try:
                self._stream = await net.start_tls(self._stream, self._ctx.tls)
            except trio.BrokenResourceError as exc:
                self._log.info("STARTTLS handshake failed: %s", exc.__cause__ or exc)
                return False
            self._core.tls_started()
            self._account_id = None
            return True
        self._log.info("STARTTLS handshake timed out")
        return False

    async def _deliver(self, event: MessageReceived) -> None:
        version, cipher = self._tls()
        connection = delivery.Connection(self._peer.session_id, self._peer.ip, version, cipher)
        # DKIM signing (submission) or SPF/DKIM/DMARC checks (MX) first; in
        # capture mode the message is kept as the application sent it.
        prepared = (
            event
            if self._capture is not None
            else await self._mailauth.prepare(self._core.session, self._peer.ip, event)
        )
        if isinstance(prepared, replies.Reply):
            reply = prepared
        elif self._capture is not None:
            reply = await self._capture.deliver(
                self._core.session, connection, prepared, submission=self._submission
            )
        else:
            reply = await delivery.deliver(
                self._ctx.store,
                self._core.session,
                connection,
                prepared,
                hostname=self._hostname,
                submission=self._submission,
                max_hops=self._config.max_hops,
                full_reply=self._full_reply,
            )
        if reply.positive:
            self._messages += 1
            self._core.accept(reply)
        else:
            self._core.reject(reply)
        if not self._log.isEnabledFor(logging.INFO):
            return  # skip joining the envelope for a line nobody reads
        self._log.info(
            "message peer=%s from=<%s> to=%s size=%d tls=%s user=%s result=%d %s",
            self._peer.ip,
            event.mail.sender,
            ",".join(f"<{r.address}>" for r in event.recipients),
            len(event.content),
            version or "no",
            self._core.session.user or "-",
            reply.code,
            reply.enhanced,
        )


async def _serve(
    ctx: ServiceContext,
    name: str,
    config: SmtpConfig,
    *,
    submission: bool,
    task_status: trio.TaskStatus[list[net.Bound]],
) -> None:
    limits = net.ConnectionLimits(config.max_connections, config.max_connections_per_ip)
    recipients = delivery.RecipientCache()
    mailauth = MailAuthentication(ctx.config, submission=submission)
    sessions: set[SmtpSession] = set()
    capture = await Capture.open(ctx.config, ctx.store) if ctx.config.capture.enabled else None

    # The core's settings differ only by these two per connection: built
    # once each, not for every session.
    settings: dict[tuple[bool, bool], Settings] = {}

    def settings_for(peer: net.Peer) -> Settings:
        plaintext_auth_allowed = (
            submission and config.allow_plaintext_auth_on_loopback and _is_loopback(peer.ip)
        )
        key = (peer.implicit_tls, plaintext_auth_allowed)
        if key not in settings:
            settings[key] = Settings(
                hostname=ctx.config.hostname,
                max_message_bytes=config.max_message_bytes,
                max_recipients=config.max_recipients,
                max_errors=config.max_errors,
                max_commands=config.max_commands,
                submission=submission,
                tls_available=True,
                tls_active=peer.implicit_tls,
                plaintext_auth_allowed=plaintext_auth_allowed,
                auth_optional=capture is not None,
                fault_injection=capture is not None and ctx.config.capture.fault_injection,
                fault_delay_seconds=ctx.config.capture.fault_delay_seconds,
            )
        return settings[key]

    async def handler(stream: trio.abc.Stream, peer: net.Peer) -> None:
        session = SmtpSession(
            ctx,
            config,
            stream,
            peer,
            submission=submission,
            recipients=recipients,
            mailauth=mailauth,
            settings=settings_for(peer),
            capture=capture,
        )
        sessions.add(session)
        try:
            await session.run()
        finally:
            sessions.discard(session)

    async def expire_sessions() -> None:
        # One watchdog per listener instead of a trio deadline per session:
        # a session only notes when its wait must end (_arm), which costs
        # less than moving a deadline in trio's timer heap several times a
        # session.  The check runs ten times per shortest timeout, at most
        # once a second, so a wait ends no earlier than configured and at
        # most that much later.
        period = min(1.0, min(config.command_timeout_seconds, config.data_timeout_seconds) / 10)
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for session in sessions:
                session.expire(now)

    async def stop_idle_sessions() -> None:
        # One waiter per listener rather than a ctx.shutdown.idle() scope
        # around every command wait: this loop is the per-message hot path.
        await ctx.shutdown.event.wait()
        for session in list(sessions):
            session.stop_if_idle()

    async def serve_sessions(task_status: trio.TaskStatus[list[net.Bound]]) -> None:
        async with trio.open_nursery() as watched:
            watched.start_soon(expire_sessions)
            await net.serve_plain_and_tls(
                name,
                handler,
                config.listen,
                config.tls_listen,
                tls=ctx.tls,
                limits=limits,
                refuse=_refuse,
                task_status=task_status,
            )
            watched.cancel_scope.cancel()  # listeners closed, every session over

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_idle_sessions)
        if capture is not None:
            nursery.start_soon(partial(capture.retention.run, until=ctx.shutdown.event))
        task_status.started(await nursery.start(serve_sessions))


async def serve_mx(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """[smtp]: inbound MX, local recipients only, no AUTH."""
    await _serve(ctx, "smtp", ctx.config.smtp, submission=False, task_status=task_status)


async def serve_submission(
    ctx: ServiceContext, *, task_status: trio.TaskStatus[list[net.Bound]] = trio.TASK_STATUS_IGNORED
) -> None:
    """[submission]: ``listen`` with STARTTLS (587), ``tls_listen`` implicit TLS (465)."""
    await _serve(ctx, "submission", ctx.config.submission, submission=True, task_status=task_status)
