"""PURE SMTP server core (RFC 5321) in the sans-I/O style.

Use: ``receive_data(bytes)`` (``b""`` = end of stream), then call
``next_event()`` until it returns None (more input needed), writing
``data_to_send()`` after each call.  Syntax, sequence and limits are decided
here; what needs the store, the authenticator or the socket becomes an event
that the adapter must answer before the core reads further:

- :class:`CheckSender` / :class:`CheckRecipient` -> ``answer(reply, targets=...)``
- :class:`Authenticate` -> ``auth_succeeded(user)`` or ``auth_failed(reply)``
- :class:`StartTls` -> ``tls_started()`` once the handshake is done
- :class:`MessageReceived` -> ``accept(reply)`` or ``reject(reply)`` (state
  PAUSED until then, so 250 is only sent after the adapter stored it)
- :class:`Stall` (fault injection, faults.py) -> ``stall_over()`` after
  waiting that long
- :class:`CloseConnection` -> close the stream (returned again on every call)

Because nothing further is parsed while an event is unanswered, replies to
pipelined commands (RFC 2920) come out strictly in order.  The core never
raises on client input; :class:`ProtocolError` means the adapter misused it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailstack.auth import sasl
from mailstack.smtp import commands, faults, replies
from mailstack.smtp.commands import CommandError
from mailstack.smtp.data import DataDecoder, Problem
from mailstack.smtp.replies import Reply
from mailstack.wire import LineTooLong, ReceiveBuffer


class ProtocolError(Exception):
    """The adapter called the core out of turn (a bug, never client input)."""


class State(enum.Enum):
    CONNECTED = "connected"  # greeted, no EHLO/HELO yet
    READY = "ready"  # no mail transaction
    MAIL = "mail"  # sender accepted
    RCPT = "rcpt"  # at least one recipient accepted
    DATA = "data"  # reading DATA text
    BDAT = "bdat"  # reading a BDAT chunk
    AUTH = "auth"  # SASL exchange in progress
    PAUSED = "paused"  # an event awaits the adapter's answer
    STARTING_TLS = "starting-tls"  # 220 sent, waiting for the handshake
    CLOSED = "closed"


# The states as module names, for the core's own comparisons and
# assignments (several per command): on Python 3.11 every ``State.X`` goes
# through the slow attribute hook that EnumType's ``__getattr__`` installs,
# three to four times the cost of a plain class attribute.
_CONNECTED = State.CONNECTED
_READY = State.READY
_MAIL = State.MAIL
_RCPT = State.RCPT
_DATA = State.DATA
_BDAT = State.BDAT
_AUTH = State.AUTH
_PAUSED = State.PAUSED
_STARTING_TLS = State.STARTING_TLS
_CLOSED = State.CLOSED


@dataclass(frozen=True, slots=True)
class Settings:
    hostname: str
    max_message_bytes: int
    max_recipients: int
    max_errors: int
    max_commands: int
    submission: bool  # AUTH offered and required before MAIL
    tls_available: bool  # STARTTLS can be offered
    tls_active: bool  # implicit TLS
    plaintext_auth_allowed: bool = False  # AUTH without TLS (loopback, by config)
    auth_optional: bool = False  # submission in capture mode: AUTH offered, not required
    # Capture mode's tempfail+/permfail+/slow+/disconnect+ recipients (faults.py).
    fault_injection: bool = False
    fault_delay_seconds: float = 0.0


@dataclass(slots=True)
class Session:
    """What lasts for the connection (reset by STARTTLS, RFC 3207 4.2)."""

    tls: bool
    helo: str | None = None
    esmtp: bool = False
    user: str | None = None


# Not frozen, made per session or message: see smtp/commands.py.
@dataclass(slots=True)
class Recipient:
    address: str
    targets: tuple[int, ...]  # whatever the adapter resolved it to (account ids)


@dataclass(slots=True)
class Envelope:
    """One mail transaction, cleared by RSET, EHLO/HELO and the end of DATA/BDAT."""

    mail: commands.Mail | None = None
    recipients: list[Recipient] = field(default_factory=list)
    chunking: bool = False  # BDAT chunks received (RFC 3030: DATA not allowed then)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass(slots=True)
class CheckSender:
    mail: commands.Mail


@dataclass(slots=True)
class CheckRecipient:
    address: str


@dataclass(slots=True)
class Authenticate:
    credentials: sasl.Credentials


@dataclass(slots=True)
class StartTls:
    discarded: int  # plaintext octets pipelined after STARTTLS, thrown away


@dataclass(slots=True)
class MessageReceived:
    mail: commands.Mail
    recipients: tuple[Recipient, ...]
    content: bytes  # dot-unstuffed (DATA) or concatenated chunks (BDAT)
    chunked: bool


@dataclass(slots=True)
class CloseConnection:
    reason: str


@dataclass(slots=True)
class Stall:
    """Injected delay (``slow+``): wait ``seconds``, then call ``stall_over()``."""

    seconds: float


_SaslStep = Callable[[sasl.SaslExchange], sasl.SaslResult]

Event = (
    CheckSender
    | CheckRecipient
    | Authenticate
    | StartTls
    | MessageReceived
    | CloseConnection
    | Stall
)


def _auth_offered(settings: Settings, tls: bool) -> bool:
    # RFC 4954 4 / RFC 8314: plaintext mechanisms only under TLS.
    return settings.submission and (tls or settings.plaintext_auth_allowed)


def _ehlo_lines(settings: Settings, tls: bool) -> tuple[str, ...]:
    lines = [
        f"{settings.hostname} at your service",
        "PIPELINING",
        f"SIZE {settings.max_message_bytes}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ]
    if settings.tls_available and not tls:
        lines.append("STARTTLS")
    if _auth_offered(settings, tls):
        lines.append("AUTH " + " ".join(sasl.mechanisms(plaintext_allowed=True)))
    return tuple(lines)


@functools.lru_cache(maxsize=64)
def _ehlo_reply(settings: Settings, tls: bool) -> Reply:
    """The EHLO reply, made once per listener setting and TLS state (every
    session asks for it)."""
    return replies.ehlo(_ehlo_lines(settings, tls))


@functools.lru_cache(maxsize=64)
def _helo_reply(hostname: str) -> Reply:
    """The HELO reply (RFC 5321 4.1.1.1: the server's name), made once."""
    return Reply(250, None, hostname)


class SmtpProtocol:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = Session(tls=settings.tls_active)
        self.envelope = Envelope()
        self.state = _CONNECTED
        self._buffer = ReceiveBuffer()
        self._out: list[bytes] = []
        self._pending: Event | None = None
        self._closed: CloseConnection | None = None
        self._errors = 0
        self._commands = 0
        self._decoder: DataDecoder | None = None
        self._sasl: sasl.SaslExchange | None = None
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None
        # The event a slow+ stall holds back, raised by next_event() once
        # stall_over() was called.
        self._after_stall: Event | None = None
        self._stalled = False
        self._mail_line = commands.COMMAND_LINE + commands.MAIL_LINE_EXTRA
        if settings.submission:
            self._mail_line += commands.AUTH_PARAM_EXTRA
        self._max_line = commands.AUTH_LINE if settings.submission else self._mail_line
        self._send(replies.greeting(settings.hostname))

    # -- I/O side ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is _STARTING_TLS:  # a StartTls event is pending
            raise ProtocolError("receive_data before tls_started")
        if self.state is not _CLOSED:
            self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        # Asked after every event, and most often there is nothing or one reply.
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def next_event(self) -> Event | None:
        if self._closed is not None:
            return self._closed
        if self._pending is not None:
            raise ProtocolError(f"{type(self._pending).__name__} not answered")
        if self._after_stall is not None and not self._stalled:
            event, self._after_stall = self._after_stall, None
            self._pause(event)
            return event
        while self._closed is None and self._pending is None:
            if not self._step():
                break
        if self._closed is not None:
            return self._closed
        return self._pending

    # -- answers from the adapter ----------------------------------------------

    def answer(self, reply: Reply, *, targets: tuple[int, ...] = ()) -> None:
        """Answer CheckSender / CheckRecipient; a positive reply takes the
        sender / recipient into the envelope."""
        event = self._take(CheckSender, CheckRecipient)
        if reply.positive:
            if isinstance(event, CheckSender):
                self.envelope.mail = event.mail
            elif isinstance(event, CheckRecipient):
                self.envelope.recipients.append(Recipient(event.address, targets))
        self._reply(reply)
        self._settle()

    def auth_succeeded(self, user: str) -> None:
        self._take(Authenticate)
        self.session.user = user
        self._send(replies.AUTH_SUCCEEDED)
        self._settle()

    def auth_failed(self, reply: Reply = replies.AUTH_FAILED) -> None:
        self._take(Authenticate)
        self._reply(reply)
        self._settle()

    def tls_started(self) -> None:
        self._take(StartTls)
        # RFC 3207 4.2: forget everything learnt before TLS, expect EHLO again.
        self.session = Session(tls=True)
        self.envelope = Envelope()
        self._buffer = ReceiveBuffer()
        self.state = _CONNECTED

    def accept(self, reply: Reply = replies.MESSAGE_ACCEPTED) -> None:
        """The message is stored durably: send the positive reply."""
        self._take(MessageReceived)
        self._end_transaction(reply)

    def reject(self, reply: Reply) -> None:
        self._take(MessageReceived)
        self._end_transaction(reply)

    def stall_over(self) -> None:
        """The injected delay passed: the next ``next_event()`` returns the
        event the stall held back."""
        self._take(Stall)
        self._stalled = False

    def timed_out(self) -> None:
        """RFC 5321 4.5.3.2: the adapter's timer expired."""
        self._close(replies.TIMEOUT, "timeout")

    def shutting_down(self) -> None:
        self._close(replies.SHUTTING_DOWN, "shutdown")

    @property
    def reading_data(self) -> bool:
        """True while message text is expected (the adapter's DATA timeout applies)."""
        state = self.state
        return state is _DATA or state is _BDAT

    # -- internals -----------------------------------------------------------------

    def _take(self, *kinds: type) -> Event:
        event = self._pending
        if event is None or not isinstance(event, kinds):
            raise ProtocolError(f"no pending {' or '.join(k.__name__ for k in kinds)}")
        self._pending = None
        return event

    def _send(self, reply: Reply) -> None:
        self._out.append(reply.wire)

    def _reply(self, reply: Reply) -> None:
        """Send a reply to a command; permanent failures count as errors."""
        self._send(reply)
        if reply.code >= 500:
            self._errors += 1
            if self._errors >= self.settings.max_errors:
                self._close(replies.TOO_MANY_ERRORS, "too many errors")

    def _close(self, reply: Reply | None, reason: str) -> None:
        if self._closed is not None:
            return
        if reply is not None:
            self._send(reply)
        self._pending = None
        self._closed = CloseConnection(reason)
        self.state = _CLOSED

    def _pause(self, event: Event) -> None:
        self._pending = event
        self.state = _PAUSED

    def _settle(self) -> None:
        """Back to the idle state that matches the session and envelope."""
        if self._closed is not None:
            return
        if self.session.helo is None:
            self.state = _CONNECTED
        elif self.envelope.mail is None:
            self.state = _READY
        elif not self.envelope.recipients:
            self.state = _MAIL
        else:
            self.state = _RCPT

    def _end_transaction(self, reply: Reply) -> None:
        self.envelope = Envelope()
        self._reply(reply)
        self._settle()

    def _step(self) -> bool:
        """Process some input; False when more is needed."""
        if self.state is _DATA:
            return self._step_data()
        if self.state is _BDAT:
            return self._step_bdat()
        try:
            line = self._buffer.next_line(self._max_line)
        except LineTooLong:
            self._buffer.discard_line()
            self._reply(replies.LINE_TOO_LONG)
            return True
        if line is None:
            if self._buffer.eof:
                self._close(None, "client closed the connection")
            return False
        if not line.endswith(b"\r\n"):
            self._reply(replies.BAD_LINE_ENDING)
            return True
        try:
            text = line[:-2].decode("utf-8")
        except UnicodeDecodeError:
            self._reply(replies.BAD_UTF8)
            return True
        if self.state is _AUTH:
            self._sasl_response(text)
            return True
        self._commands += 1
        if self._commands > self.settings.max_commands:
            self._close(replies.TOO_MANY_COMMANDS, "too many commands")
            return True
        self._command(text, len(line))
        return True

    def _line_limit(self, verb: str) -> int:
        if verb == "MAIL":
            return self._mail_line
        if verb == "AUTH" and self.settings.submission:
            return commands.AUTH_LINE
        return commands.COMMAND_LINE

    def _command(self, text: str, octets: int) -> None:
        # Every verb's limit is at least COMMAND_LINE: only a longer line
        # needs its verb read twice (here and in commands.parse).
        if octets > commands.COMMAND_LINE and octets > self._line_limit(
            text.partition(" ")[0].upper()
        ):
            self._reply(replies.LINE_TOO_LONG)
            return
        try:
            command = commands.parse(text, auth_param=self.settings.submission)
        except CommandError as exc:
            self._reply(exc.reply)
            return
        self._dispatch(command)

    def _dispatch(self, command: commands.Command) -> None:
        # One lookup by the command's type instead of a chain of isinstance
        # checks (QUIT, the last in every session, took eight).
        handler = _HANDLERS.get(type(command))
        if handler is None:
            self._reply(replies.NOT_IMPLEMENTED)  # EXPN, TURN, ...
        else:
            handler(self, command)

    def _rset(self, command: commands.Rset) -> None:
        self.envelope = Envelope()
        self._send(replies.RESET_OK)
        self._settle()

    def _noop(self, command: commands.Noop) -> None:
        self._send(replies.OK)

    def _quit(self, command: commands.Quit) -> None:
        self._close(replies.BYE, "quit")

    def _vrfy(self, command: commands.Vrfy) -> None:
        # RFC 5321 3.5.3: 252 neither confirms nor denies the user.
        self._send(replies.VRFY_CANNOT)

    def _help(self, command: commands.Help) -> None:
        self._send(replies.help_reply())

    def _hello(self, command: commands.Hello) -> None:
        # RFC 5321 4.1.4: a later EHLO/HELO resets the transaction like RSET.
        # Nothing enters an envelope before its sender (recipients and BDAT
        # chunks need MAIL first), so one without a sender is still new.
        if self.envelope.mail is not None:
            self.envelope = Envelope()
        self.session.helo = command.domain
        self.session.esmtp = command.extended
        if command.extended:
            self._send(_ehlo_reply(self.settings, self.session.tls))
        else:
            self._send(_helo_reply(self.settings.hostname))
        self._settle()

    def _mail(self, command: commands.Mail) -> None:
        if self.session.helo is None:
            self._reply(replies.SEND_HELLO_FIRST)
        elif self.envelope.mail is not None:
            self._reply(replies.NESTED_MAIL)
        elif (
            self.settings.submission
            and self.session.user is None
            and not self.settings.auth_optional
        ):
            self._reply(replies.AUTH_REQUIRED)
        elif command.size is not None and command.size > self.settings.max_message_bytes:
            self._reply(replies.SIZE_EXCEEDED)  # RFC 1870 6.1
        else:
            self._pause(CheckSender(command))

    def _rcpt(self, command: commands.Rcpt) -> None:
        mail = self.envelope.mail
        if mail is None:
            self._reply(replies.NEED_MAIL if self.session.helo else replies.SEND_HELLO_FIRST)
        elif self.envelope.chunking:
            self._reply(replies.BAD_SEQUENCE)
        elif not command.recipient.isascii() and not mail.smtputf8:
            self._reply(replies.NON_ASCII_WITHOUT_SMTPUTF8)
        elif len(self.envelope.recipients) >= self.settings.max_recipients:
            self._reply(replies.TOO_MANY_RECIPIENTS)  # RFC 5321 4.5.3.1.8
        else:
            fault = faults.rcpt_fault(command.recipient) if self.settings.fault_injection else None
            check = CheckRecipient(command.recipient)
            if fault is None:
                self._pause(check)
            else:
                self._inject(fault, check)

    def _transaction_refusal(self) -> Reply | None:
        if self.session.helo is None:
            return replies.SEND_HELLO_FIRST
        if self.envelope.mail is None:
            return replies.NEED_RCPT
        if not self.envelope.recipients:
            # RFC 5321 3.3: "no valid recipients" once MAIL was accepted.
            return replies.NO_VALID_RECIPIENTS
        return None

    def _data(self, command: commands.Data) -> None:
        refusal = self._transaction_refusal()
        if refusal is None and self.envelope.chunking:
            refusal = replies.DATA_AFTER_BDAT
        if refusal is not None:
            self._reply(refusal)
            return
        self._send(replies.START_DATA)
        self._decoder = DataDecoder(self.settings.max_message_bytes)
        self.state = _DATA

    def _step_data(self) -> bool:
        decoder = self._decoder
        assert decoder is not None
        chunk = self._buffer.take_all()
        leftover = decoder.feed(chunk) if chunk else None
        if leftover is None:
            if self._buffer.eof:
                self._close(None, "client closed the connection during DATA")
            return False
        if leftover:
            self._buffer.feed(leftover)
        self._decoder = None
        problems = decoder.problems
        if not problems:  # nearly always: no enum hashed for the lookups below
            self._message(decoder.content(), chunked=False)
        elif Problem.BARE_LINE_ENDING in problems:
            self._end_transaction(replies.BARE_LINE_ENDING)
        elif Problem.TOO_BIG in problems:
            self._end_transaction(replies.SIZE_EXCEEDED)
        else:
            self._end_transaction(replies.TEXT_LINE_TOO_LONG)
        return True

    def _message(self, content: bytes, *, chunked: bool) -> None:
        mail = self.envelope.mail
        assert mail is not None
        event = MessageReceived(mail, tuple(self.envelope.recipients), content, chunked=chunked)
        fault = None
        if self.settings.fault_injection:
            fault = faults.data_fault(r.address for r in event.recipients)
        if fault is None:
            self._pause(event)
        else:
            self._inject(fault, event)

    def _inject(self, fault: faults.Fault, event: Event) -> None:
        """Apply an injected fault instead of (or, for slow+, before) ``event``."""
        if fault.kind is faults.Kind.DISCONNECT:
            self._close(None, f"fault injection: disconnect at {fault.stage.value}")
        elif fault.kind is faults.Kind.SLOW:
            self._after_stall = event
            self._stalled = True
            self._pause(Stall(self.settings.fault_delay_seconds))
        elif fault.stage is faults.Stage.RCPT:
            assert fault.reply is not None
            self._reply(fault.reply)
        else:
            assert fault.reply is not None
            self._end_transaction(fault.reply)

    def _bdat(self, command: commands.Bdat) -> None:
        # RFC 3030 2: the chunk is read even when the command is refused.
        self._bdat_refusal = self._transaction_refusal()
        self._bdat_remaining = command.size
        self._bdat_last = command.last
        if self._bdat_refusal is None:
            self.envelope.chunking = True
        self.state = _BDAT

    def _step_bdat(self) -> bool:
        if self._bdat_remaining:
            piece = self._buffer.read_some(self._bdat_remaining)
            if not piece:
                if self._buffer.eof:
                    self._close(None, "client closed the connection during BDAT")
                return False
            self._bdat_remaining -= len(piece)
            if self._bdat_refusal is None:
                envelope = self.envelope
                envelope.size += len(piece)
                if envelope.size > self.settings.max_message_bytes:
                    envelope.chunks.clear()  # hold nothing of a refused message
                else:
                    envelope.chunks.append(piece)
            if self._bdat_remaining:
                return True
        if self._bdat_refusal is not None:
            self._settle()
            self._reply(self._bdat_refusal)
        elif self.envelope.size > self.settings.max_message_bytes:
            # RFC 3030 2: after a failed chunk the transaction is over.
            self._end_transaction(replies.SIZE_EXCEEDED)
        elif self._bdat_last:
            self._message(b"".join(self.envelope.chunks), chunked=True)
        else:
            self._settle()
            self._send(Reply(250, "2.0.0", f"{self.envelope.size} octets received"))
        return True

    def _starttls(self, command: commands.StartTls) -> None:
        s = self.settings
        if self.session.tls:
            self._reply(replies.ALREADY_TLS)
        elif not s.tls_available:
            self._reply(replies.TLS_NOT_AVAILABLE)
        elif self.envelope.mail is not None:
            self._reply(replies.BAD_SEQUENCE)
        else:
            self._send(replies.READY_FOR_TLS)
            # RFC 3207 4.2 / CVE-2011-0411: what the client pipelined after
            # STARTTLS arrived in plaintext and is thrown away, never run.
            discarded = len(self._buffer.take_all())
            self._pending = StartTls(discarded)
            self.state = _STARTING_TLS

    def _auth(self, command: commands.Auth) -> None:
        s = self.settings
        if not s.submission:
            self._reply(replies.AUTH_NOT_AVAILABLE)
        elif self.session.helo is None or not self.session.esmtp:
            self._reply(replies.SEND_HELLO_FIRST)
        elif self.session.user is not None:
            self._reply(replies.ALREADY_AUTHENTICATED)
        elif self.envelope.mail is not None:
            self._reply(replies.AUTH_IN_TRANSACTION)
        elif command.mechanism not in sasl.mechanisms(plaintext_allowed=True):
            self._reply(replies.UNSUPPORTED_MECHANISM)
        elif not _auth_offered(self.settings, self.session.tls):
            self._reply(replies.ENCRYPTION_REQUIRED)  # RFC 4954 6
        else:
            self._sasl = sasl.begin(command.mechanism, plaintext_allowed=True)
            self._sasl_result(lambda ex: ex.start(command.initial_response))

    def _sasl_response(self, text: str) -> None:
        self._sasl_result(lambda ex: ex.respond(text))

    def _sasl_result(self, step: _SaslStep) -> None:
        exchange = self._sasl
        assert exchange is not None
        try:
            result = step(exchange)
        except sasl.SaslError as exc:
            self._sasl = None
            self._settle()
            self._reply(replies.AUTH_CANCELLED if exc.cancelled else replies.AUTH_MALFORMED)
            return
        if isinstance(result, sasl.Challenge):
            self._send(Reply(334, None, result.text))
            self.state = _AUTH
        else:
            self._sasl = None
            self._pause(Authenticate(result))


# What _dispatch runs for each command type (commands.parse makes exactly
# these types, no subclasses).
_HANDLERS: dict[type, Callable[[SmtpProtocol, Any], None]] = {
    commands.Hello: SmtpProtocol._hello,
    commands.Mail: SmtpProtocol._mail,
    commands.Rcpt: SmtpProtocol._rcpt,
    commands.Data: SmtpProtocol._data,
    commands.Bdat: SmtpProtocol._bdat,
    commands.Rset: SmtpProtocol._rset,
    commands.Noop: SmtpProtocol._noop,
    commands.Quit: SmtpProtocol._quit,
    commands.Vrfy: SmtpProtocol._vrfy,
    commands.Help: SmtpProtocol._help,
    commands.StartTls: SmtpProtocol._starttls,
    commands.Auth: SmtpProtocol._auth,
}
