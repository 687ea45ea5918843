"""PURE message analysis, done once when a message is stored.

``analyze(raw)`` computes everything later readers need without re-parsing
the message: the IMAP ENVELOPE and BODYSTRUCTURE (as JSON-compatible nested
lists, serialized by the IMAP layer) and the decoded header fields used by
SEARCH, SORT, THREAD and the WebSocket API.

The MIME structure is found by a small splitter working on the raw bytes
(``parse_tree``), because IMAP needs exact byte offsets and sizes of every
part (RFC 9051 7.5.2 body-fld-octets, BODY[1.2.MIME]); the stdlib ``email``
package is used only to decode RFC 2047 words and transfer encodings.

Shapes (str / int / None / list only, so they survive a JSON column):

* envelope: ``[date, subject, from, sender, reply-to, to, cc, bcc,
  in-reply-to, message-id]``; address lists are lists of
  ``[name, adl, mailbox, host]`` (RFC 9051 7.5.2 group syntax: a group
  starts with ``[None, None, group-name, None]`` and ends with four Nones),
  or None for an absent/empty list.  Header strings are raw (undecoded).
* bodystructure: a multipart is ``[child, child, ..., subtype, params,
  disposition, language, location]`` (children are lists, the rest is not);
  a single part is ``[type, subtype, params, id, description, encoding,
  octets, (envelope, body, lines for message/rfc822) | (lines for text/*),
  md5, disposition, language, location]``.  params is a flat
  ``[name, value, ...]`` list or None.
"""

from __future__ import annotations

import binascii
import quopri
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from typing import Any, NamedTuple

from mailstack.imap import sort_keys

# Deeper nesting is treated as opaque data: bounds recursion on hostile input.
MAX_DEPTH = 64
# Bounds work on pathological messages with huge numbers of boundaries.
MAX_PARTS = 10_000

# Header fields the store keeps decoded for SEARCH/SORT/WebSocket.
DECODED_FIELDS = (
    "subject",
    "from",
    "to",
    "cc",
    "bcc",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "sender",
)


@dataclass(frozen=True, slots=True)
class MessageAnalysis:
    envelope: Any  # JSON-compatible, see the module docstring for the shape
    bodystructure: Any  # JSON-compatible, see the module docstring for the shape
    # Decoded (RFC 2047) header values keyed by lower-case field name:
    # "subject", "from", "to", "cc", "bcc", "date", "message-id",
    # "in-reply-to", "references", "reply-to", "sender".
    headers: dict[str, str]
    # SORT and THREAD keys (mailstack.imap.sort_keys); None for messages
    # stored before they existed.
    sort_keys: dict[str, Any] | None = None


@dataclass(slots=True)
class Part:
    """One MIME entity located in the raw message by byte offsets."""

    start: int  # first byte of the header
    body_start: int  # first byte of the body (after the blank line)
    end: int  # one past the last byte of the body
    headers: list[tuple[str, str]]  # (lower-case name, raw unfolded value)
    type: str  # as written ("text"), default "text"
    subtype: str
    params: list[tuple[str, str]]
    children: list[Part] = field(default_factory=list)  # multipart parts
    message: Part | None = None  # the encapsulated message of message/rfc822
    # The first value of each field name: ENVELOPE, BODYSTRUCTURE and the
    # sort keys look up some twenty fields per message.
    _first: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._first = {}
        for key, value in self.headers:
            self._first.setdefault(key, value)

    def header(self, name: str) -> str | None:
        return self._first.get(name)

    @property
    def is_multipart(self) -> bool:
        return self.type.lower() == "multipart" and bool(self.children)

    @property
    def is_message(self) -> bool:
        return self.message is not None


def to_text(data: bytes) -> str:
    """Header bytes as str: UTF-8 (RFC 6532) when valid, else Latin-1 so no byte is lost."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# -- header block -----------------------------------------------------------


def split_header(raw: bytes, start: int, end: int) -> int:
    """Offset of the body: just after the first empty line in raw[start:end]
    (RFC 5322 2.1), or ``end`` when there is none (all header)."""
    if raw.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    # The first line break followed by an empty line (CRLF or bare LF).
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 2)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


# What bytes.strip() removes (str.strip() would remove more, e.g. U+0085).
_ASCII_BLANKS = " \t\n\r\x0b\x0c"


def parse_header_fields(block: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded raw value) pairs; lines that are not fields are skipped.

    Values are UTF-8 (RFC 6532) where valid, else Latin-1, field by field."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        # Latin-1 keeps every byte as one character, so the fields split as
        # the bytes would; each value is then decoded on its own.
        fields = _split_fields(block.decode("latin-1"))
        return [(name, to_text(value.encode("latin-1")).strip()) for name, value in fields]
    # Valid as a whole, so every field is too, and splitting the text at
    # ASCII line breaks and colons cuts it where the bytes would be cut:
    # one decode instead of one per field (every message stored runs this).
    return [(name, value.strip()) for name, value in _split_fields(text)]


def _split_fields(text: str) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value, not yet stripped) of a header block."""
    fields: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            # RFC 5322 2.2.3: unfolding removes the CRLF, keeps the whitespace.
            if fields:
                fields[-1][1].append(line)
            continue
        colon = line.find(":")
        if colon <= 0:
            continue
        name = line[:colon].strip(_ASCII_BLANKS)
        # RFC 5322 2.2: a field name is printable US-ASCII but space (and
        # colon, which ends it).
        if not name or not (name.isascii() and name.isprintable()) or " " in name:
            continue
        fields.append((name.lower(), [line[colon + 1 :]]))
    return [(name, pieces[0] if len(pieces) == 1 else "".join(pieces)) for name, pieces in fields]


# -- structured header tokens (RFC 5322 3.2 / RFC 2045 5.1) ------------------

# The blanks between tokens (folding already undone or not).
_BLANK_CHARS = " \t\r\n"
_SPECIALS = frozenset('()<>@,;:\\".[]')
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_COMMA = frozenset(",")  # list separators only (Content-Language tags)


class _Tok(NamedTuple):
    kind: str  # "atom", "qs" (quoted string, unquoted), "lit" ([domain literal]), "sp" (special)
    text: str
    space_before: bool


# Values with no comment, quoted string or domain literal (most address
# and parameter fields) split into atoms and specials by one regex.
_NEEDS_SCAN = re.compile(r'[("\[]')
_SIMPLE_TOKENS: dict[frozenset[str], re.Pattern[str]] = {}


def _simple_tokens(specials: frozenset[str]) -> re.Pattern[str]:
    pattern = _SIMPLE_TOKENS.get(specials)
    if pattern is None:
        chars = re.escape("".join(sorted(specials)))
        pattern = re.compile(rf"([{_BLANK_CHARS}]+)|([{chars}])|([^{chars}{_BLANK_CHARS}]+)")
        _SIMPLE_TOKENS[specials] = pattern
    return pattern


def _tokenize(value: str, specials: frozenset[str]) -> list[_Tok]:
    if _NEEDS_SCAN.search(value) is not None:
        return _scan_tokens(value, specials)
    toks: list[_Tok] = []
    space = False
    for blank, special, atom in _simple_tokens(specials).findall(value):
        if blank:
            space = True
        else:
            toks.append(_Tok("sp", special, space) if special else _Tok("atom", atom, space))
            space = False
    return toks


def _scan_tokens(value: str, specials: frozenset[str]) -> list[_Tok]:
    """Character by character: comments (which nest), quoted strings with
    their escapes, domain literals."""
    toks: list[_Tok] = []
    i, n = 0, len(value)
    space = False
    while i < n:
        c = value[i]
        if c in _BLANK_CHARS:
            space = True
            i += 1
        elif c == "(":
            depth = 0
            while i < n:  # comments nest (RFC 5322 3.2.2)
                ch = value[i]
                if ch == "\\":
                    i += 1
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
            space = True
        elif c == '"':
            i += 1
            buf = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(value[i])
                i += 1
            i += 1
            toks.append(_Tok("qs", "".join(buf), space))
            space = False
        elif c == "[" and "[" in specials:
            close = value.find("]", i)
            close = n - 1 if close < 0 else close
            toks.append(_Tok("lit", value[i : close + 1], space))
            i = close + 1
            space = False
        elif c in specials:
            toks.append(_Tok("sp", c, space))
            i += 1
            space = False
        else:
            j = i
            while j < n and value[j] not in specials and value[j] not in _BLANK_CHARS:
                j += 1
            toks.append(_Tok("atom", value[i:j], space))
            i = j
            space = False
    return toks


def parse_content_type(value: str | None) -> tuple[str, str, list[tuple[str, str]]] | None:
    """(type, subtype, params) of a Content-Type (RFC 2045 5.1), None if unusable."""
    if value is None:
        return None
    toks = _tokenize(value, _TSPECIALS)
    if len(toks) < 3 or toks[0].kind != "atom" or toks[1].text != "/" or toks[2].kind != "atom":
        return None
    return toks[0].text, toks[2].text, _parse_params(toks[3:])


def parse_disposition(value: str | None) -> tuple[str, list[tuple[str, str]]] | None:
    """(disposition type, params) of a Content-Disposition (RFC 2183)."""
    if value is None:
        return None
    toks = _tokenize(value, _TSPECIALS)
    if not toks or toks[0].kind != "atom":
        return None
    return toks[0].text, _parse_params(toks[1:])


def _parse_params(toks: list[_Tok]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    i = 0
    while i + 3 <= len(toks):
        if toks[i].text != ";" or toks[i].kind != "sp":
            i += 1
            continue
        name, eq, val = toks[i + 1], toks[i + 2], toks[i + 3] if i + 3 < len(toks) else None
        if name.kind == "atom" and eq.text == "=" and val is not None and val.kind != "sp":
            params.append((name.text, val.text))
            i += 4
        else:
            i += 1
    return params


# -- addresses (RFC 5322 3.4) -> ENVELOPE address lists ----------------------

_END_OF_GROUP: list[str | None] = [None, None, None, None]


def _join_phrase(toks: list[_Tok]) -> str:
    out: list[str] = []
    for tok in toks:
        if out and tok.space_before:
            out.append(" ")
        out.append(tok.text)
    return "".join(out)


def _join_tight(toks: list[_Tok]) -> str:
    return "".join(tok.text for tok in toks)


# The common shapes of an address list -- "addr@host", "<addr@host>" and
# "Some Name <addr@host>", comma-separated -- read without the tokenizer
# (atoms as _tokenize has them; a dot-atom local part and host).  Anything
# else (quotes, comments, groups, routes, literals, blanks inside the
# brackets) takes the token parser, which gives the same result for these.
# Every step is linear in the value's length: no pattern with a repeat
# inside a repeat.
_ATOM = rf'[^()<>@,;:\\".\[\]{_BLANK_CHARS}]+'
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_QUICK_ADDRESS = re.compile(rf"(?P<local>{_DOT_ATOM})@(?P<host>{_DOT_ATOM})")
_BLANKS = re.compile(f"[{_BLANK_CHARS}]+")
_NOT_QUICK = re.compile(r'[()":;\[\]\\]')
_NOT_IN_NAME = re.compile(r"[<>@]")


def _quick_address_list(value: str) -> list[list[str | None]] | None:
    """parse_address_list for the common shapes; None: use the full parser."""
    if _NOT_QUICK.search(value) is not None:
        return None
    out: list[list[str | None]] = []
    for piece in value.split(","):
        name, bracket, address = piece.rpartition("<")
        if bracket:
            address = address.rstrip(_BLANK_CHARS)
            if not address.endswith(">") or _NOT_IN_NAME.search(name) is not None:
                return None
            address = address[:-1]
        else:
            address = address.strip(_BLANK_CHARS)
            if not address:
                continue  # an empty list element, skipped as the parser does
        match = _QUICK_ADDRESS.fullmatch(address)
        if match is None:
            return None
        display = _BLANKS.sub(" ", name.strip(_BLANK_CHARS)) or None
        out.append([display, None, match.group("local"), match.group("host")])
    return out or None


def parse_address_list(value: str | None) -> list[list[str | None]] | None:
    """RFC 9051 7.5.2 env-from & co.: a list of [name, adl, mailbox, host]."""
    if value is None:
        return None
    quick = _quick_address_list(value)
    return quick if quick is not None else _parse_address_tokens(value)


def _parse_address_tokens(value: str) -> list[list[str | None]] | None:
    toks = _tokenize(value, _SPECIALS)
    out: list[list[str | None]] = []
    i = 0
    n = len(toks)
    while i < n:
        if toks[i].text in (",", ";") and toks[i].kind == "sp":
            i += 1
            continue
        j = i
        while j < n and not (toks[j].kind == "sp" and toks[j].text in "<:@,;"):
            j += 1
        if j < n and toks[j].text == ":":
            group = _join_phrase(toks[i:j]) or None
            out.append([None, None, group, None])
            i = j + 1
            while i < n and not (toks[i].kind == "sp" and toks[i].text == ";"):
                if toks[i].kind == "sp" and toks[i].text == ",":
                    i += 1
                    continue
                i = _parse_mailbox(toks, i, out)
            i += 1
            out.append(list(_END_OF_GROUP))
        else:
            i = _parse_mailbox(toks, i, out)
    return out or None


def _parse_mailbox(toks: list[_Tok], i: int, out: list[list[str | None]]) -> int:
    """Parse one mailbox starting at toks[i]; append it; return the next index."""
    n = len(toks)
    j = i
    while j < n and not (toks[j].kind == "sp" and toks[j].text in "<@,;"):
        j += 1
    if j < n and toks[j].text == "<":
        name = _join_phrase(toks[i:j]) or None
        close = j + 1
        while close < n and not (toks[close].kind == "sp" and toks[close].text == ">"):
            close += 1
        inner = toks[j + 1 : close]
        adl: str | None = None
        colon = next(
            (k for k, t in enumerate(inner) if t.kind == "sp" and t.text == ":"),
            None,
        )
        if colon is not None and inner and inner[0].text == "@":
            # Obsolete source route (RFC 5322 4.4), kept as the adl.
            adl = _join_tight(inner[:colon])
            inner = inner[colon + 1 :]
        out.append([name, adl, *_addr_spec(inner)])
        i = close + 1
        # Skip trailing garbage up to the next separator.
        while i < n and not (toks[i].kind == "sp" and toks[i].text in ",;"):
            i += 1
        return i
    k = j
    while k < n and not (toks[k].kind == "sp" and toks[k].text in ",;"):
        k += 1
    if k > i:
        out.append([None, None, *_addr_spec(toks[i:k])])
    return k if k > i else i + 1


def _addr_spec(toks: list[_Tok]) -> list[str | None]:
    at = max((k for k, t in enumerate(toks) if t.kind == "sp" and t.text == "@"), default=-1)
    if at < 0:
        local = _join_tight(toks)
        return [local or "MISSING_MAILBOX", "MISSING_DOMAIN"]
    local = _join_tight(toks[:at]) or "MISSING_MAILBOX"
    host = _join_tight(toks[at + 1 :]) or "MISSING_DOMAIN"
    return [local, host]


# -- the MIME tree -----------------------------------------------------------


def _find_boundaries(
    raw: bytes, start: int, end: int, boundary: bytes
) -> list[tuple[int, int, bool]]:
    """(delimiter start incl. preceding line break, first byte after the delimiter line, is_close).

    RFC 2046 5.1.1: the delimiter is "--" boundary at the start of a line,
    optionally followed by "--" (close) and transport padding; the line break
    before it belongs to the delimiter.
    """
    marker = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    pos = start
    while len(found) < MAX_PARTS:
        hit = raw.find(marker, pos, end)
        if hit < 0:
            break
        pos = hit + len(marker)
        if hit != start and raw[hit - 1 : hit] != b"\n":
            continue
        after = hit + len(marker)
        is_close = raw.startswith(b"--", after) and after + 2 <= end
        rest = after + 2 if is_close else after
        eol = raw.find(b"\n", rest, end)
        line_end = end if eol < 0 else eol + 1
        if raw[rest:line_end].strip(b" \t\r\n"):
            continue  # "--boundaryX": a longer boundary, not ours
        delim_start = hit
        if hit > start and raw[hit - 1 : hit] == b"\n":
            delim_start = (
                hit - 2 if hit - 2 >= start and raw[hit - 2 : hit - 1] == b"\r" else hit - 1
            )
        found.append((delim_start, line_end, is_close))
        if is_close:
            break
        pos = line_end
    return found


def _build(raw: bytes, start: int, end: int, depth: int, digest: bool, budget: list[int]) -> Part:
    body_start = split_header(raw, start, end)
    headers = parse_header_fields(raw[start:body_start])
    part = Part(start, body_start, end, headers, "text", "plain", [])
    ctype = parse_content_type(part.header("content-type"))
    if ctype is None:
        if digest:
            part.type, part.subtype = "message", "rfc822"
        else:
            # RFC 2045 5.2: the default, also for a syntactically invalid field.
            part.params = [("charset", "us-ascii")]
    else:
        part.type, part.subtype, part.params = ctype
        if part.type.lower() == "text" and not any(k.lower() == "charset" for k, _ in part.params):
            # RFC 2045 5.2: text without a charset is US-ASCII; say so, as
            # clients choose the decoder from the BODYSTRUCTURE.
            part.params = [("charset", "us-ascii"), *part.params]
    budget[0] -= 1
    if depth >= MAX_DEPTH or budget[0] <= 0:
        if part.type.lower() in ("multipart", "message"):
            part.type, part.subtype = "application", "octet-stream"
        return part
    kind = part.type.lower()
    if kind == "multipart":
        boundary = next((v for k, v in part.params if k.lower() == "boundary"), "")
        if not boundary:
            # A multipart without boundary cannot be split: plain text it is.
            part.type, part.subtype, part.params = "text", "plain", [("charset", "us-ascii")]
            return part
        delims = _find_boundaries(raw, body_start, end, boundary.encode("utf-8", "replace"))
        is_digest = part.subtype.lower() == "digest"
        for index, (_, child_start, is_close) in enumerate(delims):
            if is_close:
                break
            # A missing close delimiter: the last part runs to the end.
            child_end = delims[index + 1][0] if index + 1 < len(delims) else end
            child_end = max(child_end, child_start)
            part.children.append(_build(raw, child_start, child_end, depth + 1, is_digest, budget))
        if not part.children:
            # RFC 9051 requires at least one body part: an empty text part.
            part.children.append(Part(body_start, body_start, body_start, [], "text", "plain", []))
    elif kind == "message" and part.subtype.lower() in ("rfc822", "global"):
        encoding = (part.header("content-transfer-encoding") or "7bit").lower()
        if encoding in ("7bit", "8bit", "binary"):
            part.message = _build(raw, body_start, end, depth + 1, False, budget)
    return part


def parse_tree(raw: bytes) -> Part:
    """The MIME entity tree of a message with byte offsets into ``raw``."""
    return _build(raw, 0, len(raw), 0, False, [MAX_PARTS])


# -- ENVELOPE and BODYSTRUCTURE ---------------------------------------------


def _nstring(part: Part, name: str) -> str | None:
    return part.header(name)


def envelope_of(part: Part) -> list[Any]:
    """RFC 9051 7.5.2 ENVELOPE from the header fields of ``part``."""
    from_ = parse_address_list(part.header("from"))
    sender = parse_address_list(part.header("sender")) or from_
    reply_to = parse_address_list(part.header("reply-to")) or from_
    return [
        _nstring(part, "date"),
        _nstring(part, "subject"),
        from_,
        sender,
        reply_to,
        parse_address_list(part.header("to")),
        parse_address_list(part.header("cc")),
        parse_address_list(part.header("bcc")),
        _nstring(part, "in-reply-to"),
        _nstring(part, "message-id"),
    ]


def _flat_params(params: list[tuple[str, str]]) -> list[str] | None:
    flat: list[str] = []
    for key, value in params:
        flat.extend((key, value))
    return flat or None


def _disposition(part: Part) -> list[Any] | None:
    disp = parse_disposition(part.header("content-disposition"))
    if disp is None:
        return None
    return [disp[0], _flat_params(disp[1])]


def _language(part: Part) -> Any:
    value = part.header("content-language")
    if value is None:
        return None
    tags = [t.text for t in _tokenize(value, _COMMA) if t.kind == "atom"]
    if not tags:
        return None
    return tags[0] if len(tags) == 1 else tags


def count_lines(raw: bytes, start: int, end: int) -> int:
    """body-fld-lines: the number of lines (line breaks, plus an unterminated last line)."""
    lines = raw.count(b"\n", start, end)
    if end > start and raw[end - 1 : end] != b"\n":
        lines += 1
    return lines


def bodystructure_of(raw: bytes, part: Part) -> list[Any]:
    """RFC 9051 7.5.2 BODYSTRUCTURE (with extension data) of ``part``."""
    if part.is_multipart:
        children: list[Any] = [bodystructure_of(raw, child) for child in part.children]
        return [
            *children,
            part.subtype,
            _flat_params(part.params),
            _disposition(part),
            _language(part),
            part.header("content-location"),
        ]
    fields: list[Any] = [
        part.type,
        part.subtype,
        _flat_params(part.params),
        part.header("content-id"),
        part.header("content-description"),
        part.header("content-transfer-encoding") or "7BIT",
        part.end - part.body_start,
    ]
    if part.message is not None:
        fields += [
            envelope_of(part.message),
            bodystructure_of(raw, part.message),
            count_lines(raw, part.body_start, part.end),
        ]
    elif part.type.lower() == "text":
        fields.append(count_lines(raw, part.body_start, part.end))
    return [
        *fields,
        part.header("content-md5"),
        _disposition(part),
        _language(part),
        part.header("content-location"),
    ]


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded; undecodable input is returned unchanged."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, binascii.Error, AssertionError):
        return value


def decoded_body(raw: bytes, part: Part) -> bytes:
    """The body of a leaf part with its Content-Transfer-Encoding undone (RFC 2045 6)."""
    body = raw[part.body_start : part.end]
    encoding = (part.header("content-transfer-encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            cleaned = b"".join(body.split())
            cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
            return binascii.a2b_base64(cleaned)
        if encoding == "quoted-printable":
            return quopri.decodestring(body)
    except (binascii.Error, ValueError):
        return body
    return body


def _charset_decode(data: bytes, charset: str) -> str:
    if charset.lower() in ("us-ascii", "ascii", "") and not data.isascii():
        # Undeclared 8-bit text is, in practice, UTF-8 (else Latin-1).
        return to_text(data)
    try:
        return data.decode(charset or "us-ascii", "replace")
    except LookupError:
        return to_text(data)


def text_content(raw: bytes, part: Part | None = None) -> str:
    """Decoded text of every text/* leaf (for SEARCH BODY/TEXT), parts joined by newlines."""
    root = parse_tree(raw) if part is None else part
    chunks: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_multipart:
            stack.extend(reversed(node.children))
        elif node.message is not None:
            stack.append(node.message)
            chunks.extend(decode_words(v) for _, v in node.message.headers)
        elif node.type.lower() == "text":
            charset = next((v for k, v in node.params if k.lower() == "charset"), "us-ascii")
            chunks.append(_charset_decode(decoded_body(raw, node), charset))
    return "\n".join(chunks)


def analyze(raw: bytes) -> MessageAnalysis:
    """Never raises for any input bytes: malformed MIME yields a best-effort
    structure (RFC 9051 says the server must still answer FETCH)."""
    root = parse_tree(raw)
    headers: dict[str, str] = {}
    for name, value in root.headers:
        if name in DECODED_FIELDS and name not in headers:
            headers[name] = decode_words(value)
    envelope = envelope_of(root)
    keys = sort_keys.derive(headers, envelope, decode_words)
    return MessageAnalysis(envelope, bodystructure_of(raw, root), headers, keys)
