"""PURE SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 2034, RFC 3463).

RFC 2034 3 puts the enhanced code on every line of every reply except the
greeting and the replies to HELO/EHLO; intermediate replies (354, and 334
whose text is base64, RFC 4954 4) carry none either.  Every reply the core
sends is built here, so the wording and codes live in one catalogue.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None  # "x.y.z" (RFC 3463) or None where RFC 2034 omits it
    text: str | tuple[str, ...]  # one line, or the lines of a multi-line reply
    # The reply as sent, made once: nearly every reply is one of the
    # catalogue's constants, sent several times per message.
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", _render(self))

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)


def _render(reply: Reply) -> bytes:
    """RFC 5321 4.2.1: "code-text" on every line but the last, "code text" on it."""
    lines = reply.lines or ("",)
    prefix = f"{reply.enhanced} " if reply.enhanced else ""
    out = []
    last = len(lines) - 1
    for index, line in enumerate(lines):
        sep = " " if index == last else "-"
        out.append(f"{reply.code}{sep}{prefix}{line}\r\n")
    return "".join(out).encode("utf-8")


# -- catalogue ------------------------------------------------------------------
# Names say what happened; codes follow RFC 5321 4.2.2/4.3.2 and RFC 3463.

OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "recipient OK")
RESET_OK = Reply(250, "2.0.0", "reset")
START_DATA = Reply(354, None, "end data with <CR><LF>.<CR><LF>")
BYE = Reply(221, "2.0.0", "bye")
VRFY_CANNOT = Reply(252, "2.5.0", "cannot VRFY user, but will accept message and attempt delivery")
READY_FOR_TLS = Reply(220, "2.0.0", "ready to start TLS")
AUTH_SUCCEEDED = Reply(235, "2.7.0", "authentication succeeded")

# Syntax and sequence (each counts towards max_errors).
UNRECOGNIZED = Reply(500, "5.5.2", "command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "line too long")
BAD_LINE_ENDING = Reply(500, "5.5.2", "command line must end with <CR><LF>")
BAD_UTF8 = Reply(500, "5.5.2", "command line is not valid UTF-8")
SYNTAX = Reply(501, "5.5.4", "syntax error in parameters or arguments")
NO_ARGUMENTS = Reply(501, "5.5.4", "this command takes no arguments")
BAD_SENDER = Reply(501, "5.1.7", "bad sender address syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "bad recipient address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "command not implemented")
SEND_HELLO_FIRST = Reply(503, "5.5.1", "send EHLO or HELO first")
NESTED_MAIL = Reply(503, "5.5.1", "sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "need MAIL before RCPT")
NEED_RCPT = Reply(503, "5.5.1", "need RCPT before DATA")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "no valid recipients")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
BAD_SEQUENCE = Reply(503, "5.5.1", "bad sequence of commands")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
BAD_PARAMETER = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameter not recognized or not implemented")
UNSUPPORTED_MECHANISM = Reply(504, "5.5.4", "unrecognized authentication mechanism")
NON_ASCII_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "non-ASCII address requires SMTPUTF8")

# Policy and limits.
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too many recipients")
SIZE_EXCEEDED = Reply(552, "5.3.4", "message size exceeds fixed maximum message size")
TEXT_LINE_TOO_LONG = Reply(500, "5.5.6", "line too long in message data (RFC 5321 4.5.3.1.6)")
BARE_LINE_ENDING = Reply(
    554, "5.6.11", "bare <CR> or <LF> in message data is not permitted, message rejected"
)
AUTH_REQUIRED = Reply(530, "5.7.0", "authentication required")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "encryption required for requested authentication")
AUTH_FAILED = Reply(535, "5.7.8", "authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "authentication cancelled")
AUTH_MALFORMED = Reply(501, "5.5.2", "malformed authentication data")
AUTH_TEMPORARY = Reply(454, "4.7.0", "temporary authentication failure")
TLS_NOT_AVAILABLE = Reply(502, "5.5.1", "STARTTLS not available")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "AUTH not available on this service")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "too many commands, closing connection")
TIMEOUT = Reply(421, "4.4.2", "timeout exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "service shutting down, closing connection")

# Recipient and delivery results (answered by the adapter).
UNKNOWN_USER = Reply(550, "5.1.1", "no such user here")
RELAY_DENIED = Reply(550, "5.7.1", "relay access denied")
RELAY_NOT_CONFIGURED = Reply(550, "5.7.1", "relaying is not configured on this server")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "sender address not owned by the authenticated user")
MAILBOX_FULL = Reply(452, "4.2.2", "mailbox full")
TOO_MANY_HOPS = Reply(554, "5.4.6", "too many Received header fields: mail loop (RFC 5321 6.3)")
MAILBOX_FULL_PERMANENT = Reply(552, "5.2.2", "mailbox full")
STORE_UNAVAILABLE = Reply(451, "4.3.0", "temporary failure, try again later")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "message accepted")


@functools.lru_cache(maxsize=64)
def greeting(hostname: str) -> Reply:
    # RFC 2034 3: no enhanced code on the greeting.  One object per host
    # name: every session sends it.
    return Reply(220, None, f"{hostname} ESMTP mailstack ready")


def ehlo(lines: tuple[str, ...]) -> Reply:
    """RFC 5321 4.1.1.1: the EHLO reply, the extensions one per line (no
    enhanced codes, RFC 2034 3).  The core keeps one per listener setting
    and TLS state (protocol._ehlo_reply)."""
    return Reply(250, None, lines)


def help_reply() -> Reply:
    return Reply(
        214,
        "2.0.0",
        (
            "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
            "see RFC 5321",
        ),
    )
