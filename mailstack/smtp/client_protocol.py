"""PURE SMTP client core (RFC 5321) for outbound delivery, sans-I/O.

One instance carries one mail transaction (one message, the recipients of
one domain) over one connection.  Use it like the server core:
``receive_data(bytes)`` (``b""`` = end of stream), then ``next_event()``
until it returns None, writing ``data_to_send()`` after each call.

Events:

- :class:`StartTls` -> the adapter upgrades the stream and calls
  ``tls_started()`` (RFC 3207; the core then says EHLO again, 4.2).
- :class:`TransactionDone` -> every recipient has its outcome.  It comes
  right after the reply to the end of DATA, before QUIT, so the adapter can
  record the results durably while the remote's 250 is fresh.
- :class:`Closed` -> the session is over (QUIT answered or not worth waiting
  for); close the stream.

``connection_lost()`` gives a temporary outcome to every recipient still
undecided.  Decided here: EHLO (HELO when EHLO is refused), opportunistic or
required STARTTLS, AUTH PLAIN (RFC 4954) for a smarthost, PIPELINING
(RFC 2920: MAIL, every RCPT and DATA in one write), SIZE (RFC 1870),
8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531) — a message that needs an
extension the remote lacks is refused here (a permanent outcome, so the
sender gets a DSN) rather than sent corrupted.
"""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass

from mailstack.secret import Secret
from mailstack.smtp.replies import Reply
from mailstack.wire import LineTooLong, ReceiveBuffer

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers exceed it.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200

_REPLY_LINE = re.compile(r"^([2-5][0-9][0-9])([ -])(.*)$")
_ENHANCED = re.compile(r"^([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")


class TlsPolicy(enum.Enum):
    NONE = "none"  # never STARTTLS (implicit TLS is handled by the adapter)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered
    REQUIRED = "required"  # no TLS, no mail


@dataclass(frozen=True, slots=True)
class ClientSettings:
    helo_name: str
    tls: TlsPolicy = TlsPolicy.OPPORTUNISTIC
    tls_active: bool = False  # implicit TLS (RFC 8314) already in place
    username: str = ""
    password: Secret[str] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" = null reverse-path
    recipients: tuple[str, ...]
    size: int
    smtputf8: bool = False
    eight_bit: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The fate of one recipient in this attempt."""

    reply: Reply
    delivered: bool = False
    from_remote: bool = True  # False: our own reason (no TLS, extension missing, ...)

    @property
    def permanent(self) -> bool:
        return not self.delivered and self.reply.code >= 500


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class TransactionDone:
    outcomes: dict[str, Outcome]


@dataclass(frozen=True, slots=True)
class Closed:
    pass


ClientEvent = StartTls | TransactionDone | Closed


class _State(enum.Enum):
    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    STARTTLS = "starttls"
    TLS_WAIT = "tls-wait"
    AUTH = "auth"
    TRANSACTION = "transaction"  # waiting for MAIL/RCPT/DATA replies
    DATA_END = "data-end"
    QUIT = "quit"
    CLOSED = "closed"


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) -> their parameters (RFC 5321 4.1.1.1)."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            extensions[keyword.upper()] = params.strip()
    return extensions


def dot_stuff(content: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency and the end-of-data line."""
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def synthetic(code: int, enhanced: str, text: str) -> Outcome:
    return Outcome(Reply(code, enhanced, text), from_remote=False)


class ClientProtocol:
    def __init__(self, settings: ClientSettings, envelope: Envelope, content: bytes) -> None:
        self.settings = settings
        self.envelope = envelope
        self._content = content
        self._state = _State.GREETING
        self._buffer = ReceiveBuffer()
        self._lines: list[str] = []
        self._out: list[bytes] = []
        self._events: list[ClientEvent] = []
        self.tls_active = settings.tls_active
        self.extensions: dict[str, str] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.last_reply: Reply | None = None
        # Replies still expected in the transaction, in order: "mail",
        # "rcpt:<address>", "data".
        self._expected: list[str] = []
        self._mail_ok = False
        self._accepted: list[str] = []
        self._failure: Outcome | None = None  # the session-level failure, if any
        self._done = False  # TransactionDone emitted

    # -- adapter interface -----------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> ClientEvent | None:
        while not self._events and self._state not in (_State.TLS_WAIT, _State.CLOSED):
            reply = self._next_reply()
            if reply is None:
                if self._buffer.eof:
                    self.connection_lost()
                break
            self.last_reply = reply
            self._handle(reply)
        if self._events:
            return self._events.pop(0)
        return None

    def tls_started(self) -> None:
        if self._state is not _State.TLS_WAIT:
            raise RuntimeError("tls_started() without a StartTls event")
        self.tls_active = True
        self.extensions = {}
        self._send_ehlo()

    def connection_lost(self, reason: str = "connection lost") -> dict[str, Outcome]:
        """Temporary outcomes for the recipients still undecided."""
        if self._state is not _State.CLOSED:
            failure = self._failure or synthetic(451, "4.4.2", f"{reason} ({self._stage()})")
            self._settle(failure)
            self._finish_transaction()
            self._close()
        return dict(self.outcomes)

    @property
    def awaiting_data_end(self) -> bool:
        """Waiting for the reply to the end of the data (a longer timeout)."""
        return self._state is _State.DATA_END

    @property
    def mail_accepted(self) -> bool:
        """The server took MAIL FROM: it answered for this message, so
        another MX host would not do better (RFC 5321 5.1)."""
        return self._mail_ok

    # -- replies -----------------------------------------------------------------

    def _next_reply(self) -> Reply | None:
        while True:
            try:
                raw = self._buffer.next_line(MAX_REPLY_LINE)
            except LineTooLong:
                self._buffer.discard_line()
                self._protocol_error("reply line too long")
                return None
            if raw is None:
                return None
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            match = _REPLY_LINE.match(line)
            if match is None or (self._lines and not line.startswith(self._lines[0][:3])):
                self._protocol_error(f"malformed reply {line[:80]!r}")
                return None
            self._lines.append(line)
            if len(self._lines) > MAX_REPLY_LINES:
                self._protocol_error("reply too long")
                return None
            if match.group(2) == " ":
                lines, self._lines = self._lines, []
                return _reply(lines)

    def _protocol_error(self, problem: str) -> None:
        self._lines = []
        self._fail(synthetic(451, "4.5.0", f"remote server protocol error: {problem}"))
        self._finish_transaction()
        self._close()

    def _stage(self) -> str:
        return self._state.value

    def _handle(self, reply: Reply) -> None:
        state = self._state
        if state is _State.GREETING:
            if reply.code == 220:
                self._send_ehlo()
            else:
                self._fail_and_quit(reply)
        elif state is _State.EHLO:
            if reply.code == 250:
                self.extensions = parse_extensions(reply)
                self._after_hello()
            elif reply.code >= 500:
                # RFC 5321 4.1.4: fall back to HELO for an old server.
                self._send(f"HELO {self.settings.helo_name}")
                self._state = _State.HELO
            else:
                self._fail_and_quit(reply)
        elif state is _State.HELO:
            if reply.code == 250:
                self.extensions = {}
                self._after_hello()
            else:
                self._fail_and_quit(reply)
        elif state is _State.STARTTLS:
            if reply.code == 220:
                self._state = _State.TLS_WAIT
                self._events.append(StartTls())
            elif self.settings.tls is TlsPolicy.REQUIRED:
                self._fail_and_quit(reply, temporary=True)
            else:
                self._after_tls()
        elif state is _State.AUTH:
            if reply.code == 235:
                self._start_transaction()
            else:
                # A refused login is our configuration's fault: keep the mail.
                self._fail_and_quit(
                    synthetic(454, "4.7.0", f"the relay refused authentication: {describe(reply)}")
                )
        elif state is _State.TRANSACTION:
            self._transaction_reply(reply)
        elif state is _State.DATA_END:
            for address in self._accepted:
                self.outcomes[address] = Outcome(reply, delivered=reply.code == 250)
            self._done_and_quit()
        elif state is _State.QUIT:
            self._close()

    # -- steps -------------------------------------------------------------------

    def _send(self, line: str) -> None:
        self._out.append(line.encode("utf-8") + b"\r\n")

    def _send_ehlo(self) -> None:
        self._send(f"EHLO {self.settings.helo_name}")
        self._state = _State.EHLO

    def _after_hello(self) -> None:
        policy = self.settings.tls
        if not self.tls_active and policy is not TlsPolicy.NONE and "STARTTLS" in self.extensions:
            self._send("STARTTLS")
            self._state = _State.STARTTLS
        elif not self.tls_active and policy is TlsPolicy.REQUIRED:
            self._fail_and_quit(
                synthetic(454, "4.7.4", "TLS is required for this domain but not offered")
            )
        else:
            self._after_tls()

    def _after_tls(self) -> None:
        if not self.settings.username:
            self._start_transaction()
            return
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" not in mechanisms:
            self._fail_and_quit(synthetic(454, "4.7.0", "the relay does not offer AUTH PLAIN"))
            return
        password = self.settings.password.reveal() if self.settings.password else ""
        token = f"\0{self.settings.username}\0{password}".encode()
        self._send("AUTH PLAIN " + base64.b64encode(token).decode("ascii"))
        self._state = _State.AUTH

    def _refusal(self) -> Outcome | None:
        """A permanent reason not to send this message to this server."""
        env = self.envelope
        if env.smtputf8 and "SMTPUTF8" not in self.extensions:
            return synthetic(
                554,
                "5.6.7",
                "the remote server does not support SMTPUTF8, which this message needs",
            )
        if env.eight_bit and "8BITMIME" not in self.extensions:
            return synthetic(
                554,
                "5.6.3",
                "the remote server does not support 8BITMIME, which this message needs",
            )
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) and env.size > int(limit):
            return synthetic(
                552, "5.3.4", f"message of {env.size} octets exceeds the remote limit of {limit}"
            )
        return None

    def _start_transaction(self) -> None:
        refusal = self._refusal()
        if refusal is not None:
            self._fail_and_quit(refusal)
            return
        env = self.envelope
        params = ""
        if "SIZE" in self.extensions:
            params += f" SIZE={env.size}"
        if env.eight_bit:
            params += " BODY=8BITMIME"
        if env.smtputf8:
            params += " SMTPUTF8"
        self._state = _State.TRANSACTION
        self._send(f"MAIL FROM:<{env.sender}>{params}")
        self._expected = ["mail"]
        if "PIPELINING" in self.extensions:
            for address in env.recipients:
                self._send(f"RCPT TO:<{address}>")
                self._expected.append("rcpt:" + address)
            self._send("DATA")
            self._expected.append("data")

    def _transaction_reply(self, reply: Reply) -> None:
        expected = self._expected.pop(0)
        pipelined = "PIPELINING" in self.extensions
        if expected == "mail":
            self._mail_ok = reply.code == 250
            if not self._mail_ok:
                self._failure = Outcome(reply)
                self._settle(self._failure)
                if not pipelined:
                    self._done_and_quit()
                    return
            elif not pipelined:
                self._next_rcpt()
        elif expected.startswith("rcpt:"):
            address = expected[5:]
            if address not in self.outcomes:
                if reply.code in (250, 251):
                    self._accepted.append(address)
                else:
                    self.outcomes[address] = Outcome(reply)
            if not pipelined:
                self._next_rcpt()
        elif expected == "data":
            self._data_reply(reply)
        if pipelined and not self._expected and self._state is _State.TRANSACTION:
            self._done_and_quit()

    def _next_rcpt(self) -> None:
        sent = len(self._accepted) + len(self.outcomes)
        recipients = self.envelope.recipients
        if sent < len(recipients):
            address = recipients[sent]
            self._send(f"RCPT TO:<{address}>")
            self._expected.append("rcpt:" + address)
        elif self._accepted:
            self._send("DATA")
            self._expected.append("data")
        else:
            self._done_and_quit()

    def _data_reply(self, reply: Reply) -> None:
        if reply.code != 354:
            self._settle(Outcome(reply))
            self._done_and_quit()
        elif not self._accepted or not self._mail_ok:
            # RFC 2920 3.1: DATA accepted although nothing can be delivered
            # (pipelined): end it empty; the server will refuse it.
            self._out.append(b".\r\n")
            self._state = _State.DATA_END
            self._accepted = []
        else:
            self._out.append(dot_stuff(self._content))
            self._state = _State.DATA_END

    def _settle(self, outcome: Outcome) -> None:
        for address in self.envelope.recipients:
            self.outcomes.setdefault(address, outcome)
        self._accepted = [a for a in self._accepted if self.outcomes.get(a) is None]

    def _fail(self, outcome: Outcome) -> None:
        self._failure = outcome
        self._settle(outcome)

    def _fail_and_quit(self, reply: Reply | Outcome, *, temporary: bool = False) -> None:
        outcome = reply if isinstance(reply, Outcome) else Outcome(reply)
        if temporary and outcome.reply.code >= 500:
            outcome = synthetic(454, "4.7.4", f"TLS required: {describe(outcome.reply)}")
        self._fail(outcome)
        self._done_and_quit()

    def _finish_transaction(self) -> None:
        if not self._done:
            self._done = True
            self._events.append(TransactionDone(dict(self.outcomes)))

    def _done_and_quit(self) -> None:
        self._settle(self._failure or synthetic(451, "4.3.0", "no reply for this recipient"))
        self._finish_transaction()
        self._send("QUIT")
        self._state = _State.QUIT

    def _close(self) -> None:
        self._state = _State.CLOSED
        self._events.append(Closed())


def _reply(lines: list[str]) -> Reply:
    code = int(lines[0][:3])
    texts = [line[4:] for line in lines]
    enhanced = None
    match = _ENHANCED.match(texts[0])
    if match and match.group(1)[0] == str(code)[0]:
        enhanced = match.group(1)
        texts = [t[len(enhanced) :].lstrip() if t.startswith(enhanced) else t for t in texts]
    return Reply(code, enhanced, texts[0] if len(texts) == 1 else tuple(texts))


def describe(reply: Reply) -> str:
    """One line: "550 5.1.1 no such user" (multi-line text joined)."""
    enhanced = f" {reply.enhanced}" if reply.enhanced else ""
    return f"{reply.code}{enhanced} {' '.join(reply.lines)}".strip()
