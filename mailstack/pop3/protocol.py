"""PURE POP3 server core: RFC 1939 with CAPA (RFC 2449), STLS (RFC 2595),
AUTH (RFC 5034) and extended response codes (RFC 2449 8, RFC 3206).

Use: ``receive_data(bytes)`` (``b""`` = end of stream), then call
``next_event()`` until it returns None (it needs more data), writing
``data_to_send()`` after each call.  Syntax and sequencing errors are answered
here; only decisions that need I/O become events:

- :class:`Authenticate` -> ``authenticated(maildrop)`` or ``login_failed(...)``
- :class:`FetchMessage` -> ``message_fetched(raw or None)`` or ``fetch_failed()``
- :class:`StartTls` -> ``tls_started()`` once the handshake is done
- :class:`CommitDeletions` -> ``deletions_committed(ok)``
- :class:`CloseConnection` -> close the stream (no answer; returned again on
  every later call)

While an event is unanswered the core parses nothing further, so pipelined
commands (RFC 2449 6.6) are answered strictly in order.

Rules of this file: every transition is in ``_dispatch`` and the handlers it
calls; the core never raises on client input, and no reply carries client
data back (a username is never echoed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mailstack.auth import sasl
from mailstack.pop3.maildrop import Maildrop, MaildropMessage, NoSuchMessage
from mailstack.secret import Secret
from mailstack.wire import LineTooLong, ReceiveBuffer

# RFC 1939 3: arguments are at most 40 characters.
MAX_ARGUMENT = 40


class State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"
    CLOSED = "closed"


class LoginFailure(enum.Enum):
    """Why a login was refused; the value is the RFC 2449/3206 response code."""

    AUTH = "AUTH"  # bad credentials, unknown user, throttled (RFC 3206 5)
    IN_USE = "IN-USE"  # another session holds the maildrop (RFC 2449 8.1.2)
    SYS_TEMP = "SYS/TEMP"  # the store is unavailable (RFC 3206 4)


@dataclass(frozen=True, slots=True)
class Settings:
    max_line_bytes: int
    max_commands: int
    allow_plaintext_login: bool
    tls_available: bool  # STLS can be offered (a TlsProvider exists)
    tls_active: bool  # implicit TLS listener
    # Unknown, misplaced, non-UTF-8 or over-long commands tolerated before
    # "-ERR" and close (0: unlimited).
    max_bad_commands: int = 0


@dataclass(frozen=True, slots=True)
class Authenticate:
    credentials: sasl.Credentials


@dataclass(frozen=True, slots=True)
class FetchMessage:
    message: MaildropMessage
    body_lines: int | None  # TOP's line count; None for RETR


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class CommitDeletions:
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    pass


Event = Authenticate | FetchMessage | StartTls | CommitDeletions | CloseConnection
_Answerable = TypeVar("_Answerable", Authenticate, FetchMessage, StartTls, CommitDeletions)


def _stuffed(raw: bytes) -> bytes:
    """The message as a multi-line response body, terminator included.

    RFC 1939 3: lines are CRLF-terminated, a line beginning with "." gets one
    more "." prepended, and the response ends with CRLF "." CRLF.  The store
    keeps SMTP-received messages with CRLF endings already; bare LFs (an
    IMAP APPEND from a careless client) are turned into CRLF so the wire stays
    valid.  A missing final CRLF is supplied as part of the terminator.
    """
    if raw.count(b"\n") != raw.count(b"\r\n"):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    stuffed = raw.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _top(raw: bytes, body_lines: int) -> bytes:
    """RFC 1939 7 TOP: the header, the blank line, then ``body_lines`` lines
    of the body (all of it if it is shorter)."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        body_start = crlf + 4
    elif lf >= 0:
        body_start = lf + 2
    else:
        return raw  # header only: there is no body to count lines in
    end = body_start
    for _ in range(body_lines):
        newline = raw.find(b"\n", end)
        if newline < 0:
            return raw
        end = newline + 1
    return raw[:end]


def _message_number(text: str) -> int | None:
    """A message-number argument: decimal digits, no sign, not zero-padded
    into absurd lengths (RFC 1939 3 caps arguments at 40 characters)."""
    if not text.isascii() or not text.isdigit() or len(text) > MAX_ARGUMENT:
        return None
    return int(text)


class Pop3Protocol:
    def __init__(self, settings: Settings, *, greeting: str) -> None:
        self._settings = settings
        self._buffer = ReceiveBuffer()
        self._out = bytearray()
        self._state = State.AUTHORIZATION
        self._tls_active = settings.tls_active
        self._user: str | None = None  # name from USER awaiting PASS
        self._sasl: sasl.SaslExchange | None = None  # AUTH exchange in progress
        self._pending: Event | None = None  # event awaiting the adapter's answer
        self._maildrop: Maildrop | None = None
        self._commands = 0
        self.bad_commands = 0
        self._reply(f"+OK {greeting}")

    # -- state visible to the adapter --------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def maildrop(self) -> Maildrop | None:
        return self._maildrop

    def _plaintext_allowed(self) -> bool:
        return self._tls_active or self._settings.allow_plaintext_login

    # -- I/O side --------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """Process buffered lines; an event the adapter must act on, or None
        when more data is needed (or an earlier event is still unanswered)."""
        while self._pending is None:
            if self._state is State.CLOSED:
                return CloseConnection()
            try:
                line = self._buffer.next_line(self._settings.max_line_bytes)
            except LineTooLong:
                self._buffer.discard_line()
                self._cancel_sasl()
                self._bad("-ERR line too long")
                continue
            if line is None:
                if self._buffer.eof:
                    # A dropped connection never reaches UPDATE (RFC 1939 6):
                    # nothing marked is deleted.
                    self._state = State.CLOSED
                    continue
                return None
            self._pending = self._line(line.rstrip(b"\r\n"))
        return self._pending

    def timed_out(self) -> None:
        """The autologout timer fired (RFC 1939 3): say so; the adapter then
        closes without UPDATE."""
        self._reply("-ERR [SYS/TEMP] autologout, idle for too long")
        self._state = State.CLOSED

    def shutting_down(self) -> None:
        """The server is stopping and this session is between commands: say
        so and close without UPDATE, so nothing marked with DELE is removed
        (RFC 1939 6: only QUIT enters the UPDATE state)."""
        self._reply("-ERR [SYS/TEMP] server shutting down, try again later")
        self._state = State.CLOSED

    # -- answers to events -----------------------------------------------------
    def authenticated(self, maildrop: Maildrop) -> None:
        self._take(Authenticate)
        self._maildrop = maildrop
        self._state = State.TRANSACTION
        count, octets = maildrop.stat()
        self._reply(f"+OK maildrop has {count} messages ({octets} octets)")

    def login_failed(self, reason: LoginFailure) -> None:
        self._take(Authenticate)
        text = {
            LoginFailure.AUTH: "invalid user name or password",
            LoginFailure.IN_USE: "maildrop already locked by another session",
            LoginFailure.SYS_TEMP: "temporary server failure, try again later",
        }[reason]
        self._reply(f"-ERR [{reason.value}] {text}")

    def message_fetched(self, raw: bytes | None) -> None:
        """``raw`` is the stored message, or None if it no longer exists."""
        event = self._take(FetchMessage)
        if raw is None:
            self._reply(f"-ERR message {event.message.number} no longer exists")
            return
        if event.body_lines is None:
            self._reply(f"+OK {event.message.size} octets")
            self._out += _stuffed(raw)
        else:
            self._reply("+OK top of message follows")
            self._out += _stuffed(_top(raw, event.body_lines))

    def fetch_failed(self) -> None:
        """The store could not be read just now (RFC 3206 4: [SYS/TEMP])."""
        event = self._take(FetchMessage)
        self._reply(f"-ERR [SYS/TEMP] cannot read message {event.message.number} now")

    def tls_started(self) -> None:
        """RFC 2595 4: after STLS the session starts over in AUTHORIZATION,
        forgetting anything learned before (and a half-given USER)."""
        self._take(StartTls)
        self._tls_active = True
        self._user = None

    def deletions_committed(self, ok: bool) -> None:
        self._take(CommitDeletions)
        if ok:
            self._reply("+OK bye")
        else:
            # RFC 1939 6: -ERR when some deleted messages were not removed.
            self._reply("-ERR [SYS/TEMP] some deleted messages not removed")
        self._state = State.CLOSED

    # -- internals --------------------------------------------------------------
    def _take(self, kind: type[_Answerable]) -> _Answerable:
        event = self._pending
        if not isinstance(event, kind):
            raise RuntimeError(f"no pending {kind.__name__} to answer")
        self._pending = None
        return event

    def _reply(self, line: str) -> None:
        self._out += line.encode("utf-8") + b"\r\n"

    def _bad(self, line: str) -> None:
        """Answer a bad command; past max_bad_commands, close (no UPDATE:
        RFC 1939 6 deletes nothing for a session that did not QUIT)."""
        self._reply(line)
        self.bad_commands += 1
        limit = self._settings.max_bad_commands
        if limit and self.bad_commands >= limit:
            self._reply("-ERR [SYS/PERM] too many bad commands")
            self._state = State.CLOSED

    def _multiline(self, first: str, lines: list[str]) -> None:
        self._reply(first)
        for line in lines:
            self._reply(line)
        self._out += b".\r\n"

    def _cancel_sasl(self) -> None:
        if self._sasl is not None:
            self._sasl = None
            self._reply("-ERR authentication aborted")

    def _line(self, raw: bytes) -> Event | None:
        self._commands += 1
        if self._commands > self._settings.max_commands:
            self._reply("-ERR [SYS/PERM] too many commands in one session")
            self._state = State.CLOSED
            return None
        if self._sasl is not None:
            return self._sasl_response(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._bad("-ERR command is not valid UTF-8")
            return None
        keyword, _, rest = text.partition(" ")
        return self._dispatch(keyword.upper(), rest)

    def _dispatch(self, keyword: str, rest: str) -> Event | None:
        handlers: dict[str, Callable[[str], Event | None]]
        if self._state is State.AUTHORIZATION:
            handlers = {
                "USER": self._user_command,
                "AUTH": self._auth_command,
                "STLS": self._stls_command,
                "CAPA": self._capa_command,
                "QUIT": self._quit_authorization,
            }
        else:
            handlers = {
                "STAT": self._stat_command,
                "LIST": self._list_command,
                "RETR": self._retr_command,
                "DELE": self._dele_command,
                "NOOP": self._noop_command,
                "RSET": self._rset_command,
                "TOP": self._top_command,
                "UIDL": self._uidl_command,
                "CAPA": self._capa_command,
                "QUIT": self._quit_transaction,
            }
        # RFC 1939 7: PASS must directly follow a successful USER.
        previous_user, self._user = self._user, None
        if keyword == "PASS" and self._state is State.AUTHORIZATION:
            return self._pass_command(rest, previous_user)
        handler = handlers.get(keyword)
        if handler is None:
            if keyword in _ALL_COMMANDS:
                self._bad("-ERR command not valid in this state")
            else:
                self._bad("-ERR unknown command")
            return None
        return handler(rest)

    # -- AUTHORIZATION state -------------------------------------------------------
    def _user_command(self, rest: str) -> Event | None:
        if not self._plaintext_allowed():
            self._reply("-ERR [AUTH] plaintext login disallowed before STLS")
            return None
        if not rest or " " in rest:
            self._reply("-ERR syntax: USER name")
            return None
        self._user = rest
        self._reply("+OK send PASS")
        return None

    def _pass_command(self, rest: str, user: str | None) -> Event | None:
        if user is None:
            self._reply("-ERR USER first")
            return None
        if not rest:
            self._reply("-ERR syntax: PASS password")
            return None
        # RFC 1939 7: PASS has one argument, so spaces belong to the password.
        return Authenticate(sasl.Credentials(authcid=user, password=Secret(rest)))

    def _auth_command(self, rest: str) -> Event | None:
        plaintext = self._plaintext_allowed()
        if not rest:
            # RFC 1734 form still used by some clients to list mechanisms.
            self._multiline("+OK", sasl.mechanisms(plaintext_allowed=plaintext))
            return None
        mechanism, _, initial = rest.partition(" ")
        try:
            exchange = sasl.begin(mechanism, plaintext_allowed=plaintext)
        except sasl.SaslError:
            if mechanism.upper() in sasl.PLAINTEXT_MECHANISMS:
                self._reply("-ERR [AUTH] plaintext authentication disallowed before STLS")
            else:
                self._reply("-ERR unrecognized authentication mechanism")
            return None
        self._sasl = exchange
        return self._sasl_step(lambda: exchange.start(initial or None))

    def _sasl_response(self, raw: bytes) -> Event | None:
        exchange = self._sasl
        assert exchange is not None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            self._sasl = None
            self._reply("-ERR [AUTH] invalid base64 data")
            return None
        return self._sasl_step(lambda: exchange.respond(text))

    def _sasl_step(self, step: Callable[[], sasl.SaslResult]) -> Event | None:
        try:
            result = step()
        except sasl.SaslError as exc:
            self._sasl = None
            # RFC 5034 4: "*" cancels; the server answers -ERR.
            if exc.cancelled:
                self._reply("-ERR authentication cancelled")
            else:
                self._reply(f"-ERR [AUTH] {exc.reason}")
            return None
        if isinstance(result, sasl.Challenge):
            self._reply(f"+ {result.text}")
            return None
        self._sasl = None
        return Authenticate(result)

    def _stls_command(self, rest: str) -> Event | None:
        if rest:
            self._reply("-ERR syntax: STLS takes no arguments")
        elif self._tls_active:
            self._reply("-ERR TLS already active")
        elif not self._settings.tls_available:
            self._reply("-ERR TLS not available")
        else:
            self._reply("+OK begin TLS negotiation")
            # Anything pipelined behind STLS was sent in plaintext and could
            # have been injected: discard it (RFC 2595 4, as RFC 3207 4.2).
            self._buffer.take_all()
            return StartTls()
        return None

    def _capa_command(self, rest: str) -> Event | None:
        if rest:
            self._reply("-ERR syntax: CAPA takes no arguments")
            return None
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self._state is State.AUTHORIZATION:
            plaintext = self._plaintext_allowed()
            if plaintext:
                lines.append("USER")
            mechanisms = sasl.mechanisms(plaintext_allowed=plaintext)
            if mechanisms:
                lines.append("SASL " + " ".join(mechanisms))
            if self._settings.tls_available and not self._tls_active:
                lines.append("STLS")
        lines.append("IMPLEMENTATION mailstack")
        self._multiline("+OK capability list follows", lines)
        return None

    def _quit_authorization(self, rest: str) -> Event | None:
        # RFC 1939 6: QUIT in AUTHORIZATION ends without entering UPDATE.
        self._reply("+OK bye")
        self._state = State.CLOSED
        return None

    # -- TRANSACTION state --------------------------------------------------------
    def _drop(self) -> Maildrop:
        assert self._maildrop is not None
        return self._maildrop

    def _no_arguments(self, command: str, rest: str) -> bool:
        if rest:
            self._reply(f"-ERR syntax: {command} takes no arguments")
            return False
        return True

    def _lookup(self, command: str, argument: str) -> MaildropMessage | None:
        number = _message_number(argument)
        if number is None:
            self._reply(f"-ERR syntax: {command} needs a message number")
            return None
        try:
            return self._drop().get(number)
        except NoSuchMessage as exc:
            self._reply(f"-ERR {exc}")
            return None

    def _stat_command(self, rest: str) -> Event | None:
        if self._no_arguments("STAT", rest):
            count, octets = self._drop().stat()
            self._reply(f"+OK {count} {octets}")
        return None

    def _list_command(self, rest: str) -> Event | None:
        if rest:
            message = self._lookup("LIST", rest)
            if message is not None:
                self._reply(f"+OK {message.number} {message.size}")
            return None
        live = self._drop().live()
        octets = sum(m.size for m in live)
        self._multiline(
            f"+OK {len(live)} messages ({octets} octets)",
            [f"{m.number} {m.size}" for m in live],
        )
        return None

    def _uidl_command(self, rest: str) -> Event | None:
        if rest:
            message = self._lookup("UIDL", rest)
            if message is not None:
                self._reply(f"+OK {message.number} {message.unique_id}")
            return None
        lines = [f"{m.number} {m.unique_id}" for m in self._drop().live()]
        self._multiline("+OK unique-id listing follows", lines)
        return None

    def _fetch(self, message: MaildropMessage, body_lines: int | None) -> Event | None:
        if self._drop().is_gone(message):
            self._reply(f"-ERR message {message.number} no longer exists")
            return None
        return FetchMessage(message, body_lines)

    def _retr_command(self, rest: str) -> Event | None:
        message = self._lookup("RETR", rest)
        return None if message is None else self._fetch(message, None)

    def _top_command(self, rest: str) -> Event | None:
        number, _, lines_text = rest.partition(" ")
        lines = _message_number(lines_text)
        if lines is None:
            self._reply("-ERR syntax: TOP message-number lines")
            return None
        message = self._lookup("TOP", number)
        return None if message is None else self._fetch(message, lines)

    def _dele_command(self, rest: str) -> Event | None:
        message = self._lookup("DELE", rest)
        if message is not None:
            self._drop().delete(message.number)
            self._reply(f"+OK message {message.number} deleted")
        return None

    def _noop_command(self, rest: str) -> Event | None:
        if self._no_arguments("NOOP", rest):
            self._reply("+OK")
        return None

    def _rset_command(self, rest: str) -> Event | None:
        if self._no_arguments("RSET", rest):
            self._drop().reset()
            count, octets = self._drop().stat()
            self._reply(f"+OK maildrop has {count} messages ({octets} octets)")
        return None

    def _quit_transaction(self, rest: str) -> Event | None:
        # RFC 1939 6: QUIT from TRANSACTION enters UPDATE, removing the
        # marked messages; only then does the session end.
        self._state = State.UPDATE
        uids = self._drop().marked_uids()
        if not uids:
            self._reply("+OK bye")
            self._state = State.CLOSED
            return None
        return CommitDeletions(uids)


_ALL_COMMANDS = frozenset(
    {
        "USER", "PASS", "AUTH", "STLS", "CAPA", "QUIT", "STAT", "LIST",
        "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL",
    }
)  # fmt: skip
