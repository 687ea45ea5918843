"""PURE SMTP command-line parser: RFC 5321 4.1 with the ESMTP parameters of
SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING
(RFC 3030) and AUTH= (RFC 4954 5).

``parse(line)`` takes one command line without its CRLF, already decoded,
and returns a typed command or raises :class:`CommandError` carrying the
reply to send.  Paths are reduced to the mailbox they name: a source route
(``<@a,@b:user@c>``) is accepted and ignored as RFC 5321 4.1.1.3 allows, so
policy only ever sees ``user@c``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailstack.smtp import replies
from mailstack.smtp.replies import Reply


class CommandError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class Body(enum.Enum):
    """RFC 6152 / RFC 3030 BODY= values (BINARYMIME is not advertised)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT = "8BITMIME"


# Commands, the core's events and the other values made for every session
# are plain slotted dataclasses, not frozen ones: a frozen dataclass's
# __init__ sets each field through object.__setattr__, about twice the
# instructions of a plain one (callgrind, CPython 3.11; some thirty fields a
# session).  Nothing assigns to them after construction.
@dataclass(slots=True)
class Hello:
    domain: str
    extended: bool  # EHLO rather than HELO


@dataclass(slots=True)
class Mail:
    sender: str  # "" for the null reverse-path <>
    size: int | None = None  # RFC 1870 declared size
    body: Body = Body.SEVEN_BIT
    smtputf8: bool = False
    auth: str | None = None  # RFC 4954 5 AUTH= (xtext-decoded), informational


@dataclass(slots=True)
class Rcpt:
    recipient: str  # "postmaster" (no domain) is allowed, RFC 5321 4.1.1.3


@dataclass(slots=True)
class Data:
    pass


@dataclass(slots=True)
class Bdat:
    size: int
    last: bool


@dataclass(slots=True)
class Rset:
    pass


@dataclass(slots=True)
class Noop:
    pass


@dataclass(slots=True)
class Quit:
    pass


@dataclass(slots=True)
class Vrfy:
    argument: str


@dataclass(slots=True)
class Help:
    topic: str


@dataclass(slots=True)
class StartTls:
    pass


@dataclass(slots=True)
class Auth:
    mechanism: str
    initial_response: str | None  # base64 text as sent ("=" is empty)


@dataclass(slots=True)
class NotImplemented_:
    """A command RFC 5321 knows but this server does not offer (EXPN, TURN...)."""

    verb: str


Command = (
    Hello | Mail | Rcpt | Data | Bdat | Rset | Noop | Quit | Vrfy | Help | StartTls | Auth
) | NotImplemented_

# RFC 5321 4.5.3.1.4: 512 octets including CRLF; the extensions we advertise
# may lengthen MAIL: SIZE (RFC 1870 +26), SMTPUTF8 (RFC 6531 3.4 +10),
# BODY=8BITMIME (RFC 6152 leaves the allowance unspecified; 14 covers it) and
# AUTH= (RFC 4954 5 +500).  AUTH lines and SASL responses may reach 12288
# octets (RFC 4954 4).
COMMAND_LINE = 512
MAIL_LINE_EXTRA = 26 + 10 + 14
AUTH_PARAM_EXTRA = 500
AUTH_LINE = 12288

# RFC 5321 4.5.3.1.1-3: local part 64, domain 255, path 256 octets.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_DIGITS = re.compile(r"[0-9]{1,20}\Z")
# RFC 5321 4.1.2 atext plus RFC 6531 3.3 UTF8-non-ascii.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"\Z')
_LABEL = (
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_ADDRESS_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")
_ROUTE = re.compile(rf"@{_LABEL}(?:\.{_LABEL})*(?:,@{_LABEL}(?:\.{_LABEL})*)*:")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


def _split_verb(line: str) -> tuple[str, str]:
    verb, _, rest = line.partition(" ")
    return verb.upper(), rest


def is_domain(text: str) -> bool:
    """A Domain or address-literal (RFC 5321 4.1.2)."""
    if not text or len(text.encode("utf-8")) > MAX_DOMAIN:
        return False
    return bool(_DOMAIN.match(text) or _ADDRESS_LITERAL.match(text))


def parse_mailbox(text: str) -> str:
    """``Local-part "@" Domain``, checked; the address as given (quotes kept).

    Raises ValueError on anything else, including a second unquoted ``@``.
    """
    at = text.rfind("@")
    if at <= 0:
        raise ValueError("missing @")
    local, domain = text[:at], text[at + 1 :]
    if not (_DOT_STRING.match(local) or _QUOTED_STRING.match(local)):
        raise ValueError("bad local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValueError("local part too long")
    if not is_domain(domain):
        raise ValueError("bad domain")
    return text


def unquote_local_part(local: str) -> str:
    """The local part with RFC 5321 quoting removed (for policy checks)."""
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def _parse_path(argument: str, *, null_allowed: bool) -> tuple[str, str]:
    """``<path> [params]`` -> (mailbox, params text).  Raises ValueError."""
    if not argument.startswith("<"):
        raise ValueError("path must be in angle brackets")
    end = _closing_bracket(argument)
    path, rest = argument[1:end], argument[end + 1 :]
    if rest and not rest.startswith(" "):
        raise ValueError("junk after path")
    if len(path.encode("utf-8")) + 2 > MAX_PATH:
        raise ValueError("path too long")
    if path == "":
        if not null_allowed:
            raise ValueError("null path not allowed here")
        return "", rest.strip(" ")
    route = _ROUTE.match(path)
    if route:
        path = path[route.end() :]
    return parse_mailbox(path), rest.strip(" ")


def _closing_bracket(argument: str) -> int:
    """Index of the ">" closing the path, skipping quoted local parts."""
    if '"' not in argument:  # nearly every path: the first ">" closes it
        end = argument.find(">")
        if end < 0:
            raise ValueError("unterminated path")
        return end
    quoted = escaped = False
    for index, char in enumerate(argument):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    raise ValueError("unterminated path")


def _parameters(text: str) -> list[tuple[str, str | None]]:
    """RFC 5321 4.1.2 esmtp-param *(SP esmtp-param), keyword upper-cased."""
    params: list[tuple[str, str | None]] = []
    if not text:
        return params
    seen: set[str] = set()
    for item in text.split(" "):
        if not item:
            raise ValueError("empty parameter")
        keyword, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.match(keyword) or (eq and not value):
            raise ValueError("bad parameter")
        keyword = keyword.upper()
        if keyword in seen:
            raise ValueError("repeated parameter")
        seen.add(keyword)
        params.append((keyword, value if eq else None))
    return params


def _xtext(value: str) -> str:
    """RFC 3461 4 xtext decoding (the AUTH= value)."""
    if "+" in _XTEXT_HEX.sub("", value):
        raise ValueError("bad xtext")
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def _colon_argument(rest: str, keyword: str) -> str:
    """``FROM:<...>`` / ``TO:<...>``; one space after the colon is tolerated
    (common in the wild, harmless)."""
    head, colon, argument = rest.partition(":")
    if not colon or head.upper() != keyword:
        raise CommandError(replies.SYNTAX)
    return argument[1:] if argument.startswith(" ") else argument


def _mail(rest: str, *, auth_param: bool) -> Mail:
    argument = _colon_argument(rest, "FROM")
    try:
        sender, param_text = _parse_path(argument, null_allowed=True)
    except ValueError:
        raise CommandError(replies.BAD_SENDER) from None
    try:
        params = _parameters(param_text)
    except ValueError:
        raise CommandError(replies.SYNTAX) from None
    size: int | None = None
    body = Body.SEVEN_BIT
    smtputf8 = False
    auth: str | None = None
    for keyword, value in params:
        if keyword == "SIZE" and value is not None and _DIGITS.match(value):
            size = int(value)
        elif keyword == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
            body = Body(value.upper())
        elif keyword == "SMTPUTF8" and value is None:
            smtputf8 = True
        elif keyword == "AUTH" and value is not None and auth_param:
            try:
                auth = _xtext(value)
            except ValueError:
                raise CommandError(replies.SYNTAX) from None
        else:
            raise CommandError(replies.BAD_PARAMETER)
    if not smtputf8 and not sender.isascii():
        raise CommandError(replies.NON_ASCII_WITHOUT_SMTPUTF8)
    return Mail(sender=sender, size=size, body=body, smtputf8=smtputf8, auth=auth)


def _rcpt(rest: str) -> Rcpt:
    argument = _colon_argument(rest, "TO")
    # RFC 5321 4.1.1.3: <Postmaster> without a domain must be accepted.
    if argument[:12].lower() == "<postmaster>":
        recipient, param_text = "postmaster", argument[12:].strip(" ")
    else:
        try:
            recipient, param_text = _parse_path(argument, null_allowed=False)
        except ValueError:
            raise CommandError(replies.BAD_RECIPIENT) from None
    try:
        params = _parameters(param_text)
    except ValueError:
        raise CommandError(replies.SYNTAX) from None
    if params:
        # No RCPT parameters are advertised (no DSN, RFC 3461).
        raise CommandError(replies.BAD_PARAMETER)
    return Rcpt(recipient)


def _bdat(rest: str) -> Bdat:
    parts = rest.split(" ")
    if not 1 <= len(parts) <= 2 or not _DIGITS.match(parts[0]):
        raise CommandError(replies.SYNTAX)
    if len(parts) == 2 and parts[1].upper() != "LAST":
        raise CommandError(replies.SYNTAX)
    return Bdat(size=int(parts[0]), last=len(parts) == 2)


def _no_arguments(rest: str, command: Command) -> Command:
    if rest.strip(" "):
        raise CommandError(replies.NO_ARGUMENTS)
    return command


def parse(line: str, *, auth_param: bool = False) -> Command:
    """One command line (no CRLF).  ``auth_param``: the AUTH extension is
    advertised, so MAIL may carry AUTH=."""
    verb, rest = _split_verb(line)
    if verb in ("EHLO", "HELO"):
        domain = rest.strip(" ")
        # RFC 5321 4.1.1.1: the argument is a domain or an address literal;
        # HELO/EHLO names are not verified, but must have that shape.  Many
        # Windows hosts put "_" in their names: tolerated here only.
        if not is_domain(domain.replace("_", "-")):
            raise CommandError(replies.SYNTAX)
        return Hello(domain, extended=verb == "EHLO")
    if verb == "MAIL":
        return _mail(rest, auth_param=auth_param)
    if verb == "RCPT":
        return _rcpt(rest)
    if verb == "DATA":
        return _no_arguments(rest, Data())
    if verb == "BDAT":
        return _bdat(rest)
    if verb == "RSET":
        return _no_arguments(rest, Rset())
    if verb == "NOOP":
        return Noop()  # RFC 5321 4.1.1.9: a parameter string may be given and is ignored
    if verb == "QUIT":
        return _no_arguments(rest, Quit())
    if verb == "VRFY":
        if not rest.strip(" "):
            raise CommandError(replies.SYNTAX)
        return Vrfy(rest.strip(" "))
    if verb == "HELP":
        return Help(rest.strip(" "))
    if verb == "STARTTLS":
        return _no_arguments(rest, StartTls())
    if verb == "AUTH":
        parts = rest.strip(" ").split(" ")
        if not parts[0] or len(parts) > 2:
            raise CommandError(replies.SYNTAX)
        return Auth(parts[0].upper(), parts[1] if len(parts) == 2 else None)
    if verb in ("EXPN", "TURN", "SEND", "SOML", "SAML"):
        return NotImplemented_(verb)
    raise CommandError(replies.UNRECOGNIZED)
