"""PURE IMAP command grammar (RFC 9051 9, RFC 3501 9 and the extensions we announce).

One function per ABNF rule, the rule quoted in its docstring.  Every function
takes a :class:`Reader` positioned at the rule's first octet and raises
:class:`ParseError` (answered with BAD) on anything else.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mailstack.imap import commands as c
from mailstack.imap.framing import Frame
from mailstack.imap.sequence import STAR, SequenceSet
from mailstack.imap.sort import CRITERIA as SORT_CRITERIA


class ParseError(Exception):
    """The command does not match the grammar (answered with tagged BAD)."""


_CTL = set(range(0, 32)) | {127}
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM_SPECIALS = _CTL | {ord(ch) for ch in '(){ %*"\\]'}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class Reader:
    """Cursor over a framed command: line text with literals spliced in."""

    def __init__(self, frame: Frame, max_depth: int = 16) -> None:
        self.lines = frame.lines
        self.literals = frame.literals
        self.index = 0
        self.pos = 0
        self.max_depth = max_depth
        self.depth = 0

    @property
    def line(self) -> bytes:
        return self.lines[self.index]

    def peek(self) -> int | None:
        return self.line[self.pos] if self.pos < len(self.line) else None

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self.index == len(self.lines) - 1

    def take(self, text: bytes) -> bool:
        """Consume ``text`` (case-insensitively) if it comes next."""
        end = self.pos + len(text)
        if self.line[self.pos : end].upper() == text.upper():
            self.pos = end
            return True
        return False

    def expect(self, text: bytes) -> None:
        if not self.take(text):
            raise ParseError(f"expected {text.decode()!r}")

    def sp(self) -> None:
        self.expect(b" ")

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected characters at end of command")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise ParseError("too deeply nested")

    def leave(self) -> None:
        self.depth -= 1


def _while(r: Reader, allowed: object) -> bytes:
    start = r.pos
    line = r.line
    while r.pos < len(line) and line[r.pos] in allowed:  # type: ignore[operator]
        r.pos += 1
    return line[start : r.pos]


class _Chars:
    def __init__(self, excluded: set[int]) -> None:
        self.excluded = excluded

    def __contains__(self, byte: int) -> bool:
        return byte not in self.excluded


ATOM_CHARS = _Chars(_ATOM_SPECIALS)
ASTRING_CHARS = _Chars(_ATOM_SPECIALS - {ord("]")})
LIST_CHARS = _Chars(_ATOM_SPECIALS - {ord("%"), ord("*"), ord("]")})
TAG_CHARS = _Chars(_ATOM_SPECIALS - {ord("]")} | {ord("+")})


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("invalid UTF-8") from exc


def atom(r: Reader) -> str:
    """atom = 1*ATOM-CHAR"""
    value = _while(r, ATOM_CHARS)
    if not value:
        raise ParseError("expected an atom")
    return _text(value)


def tag(r: Reader) -> str:
    """tag = 1*<any ASTRING-CHAR except "+">"""
    value = _while(r, TAG_CHARS)
    if not value:
        raise ParseError("missing tag")
    return _text(value)


def quoted(r: Reader) -> bytes:
    """quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR = <any TEXT-CHAR except
    quoted-specials> / "\\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4"""
    r.expect(b'"')
    out = bytearray()
    line = r.line
    while True:
        if r.pos >= len(line):
            raise ParseError("unterminated quoted string")
        byte = line[r.pos]
        r.pos += 1
        if byte == ord('"'):
            return bytes(out)
        if byte == ord("\\"):
            if r.pos >= len(line) or line[r.pos] not in b'"\\':
                raise ParseError("bad escape in quoted string")
            byte = line[r.pos]
            r.pos += 1
        elif byte in (0, 10, 13):
            raise ParseError("bad character in quoted string")
        out.append(byte)


def literal(r: Reader) -> bytes:
    """literal = "{" number64 ["+"] "}" CRLF *CHAR8 (the framer already
    removed the "+" and collected the octets)"""
    if r.peek() != ord("{") or r.index >= len(r.literals):
        raise ParseError("expected a literal")
    close = r.line.find(b"}", r.pos)
    if close != len(r.line) - 1:
        raise ParseError("bad literal announcement")
    data = r.literals[r.index]
    r.index += 1
    r.pos = 0
    return data


def literal8(r: Reader) -> bytes:
    """literal8 = "~{" number64 ["+"] "}" CRLF *OCTET (RFC 3516 / 9051)"""
    r.expect(b"~")
    return literal(r)


def append_message(r: Reader) -> bytes:
    """append-data = literal / literal8 / "UTF8" SP "(" literal8 ")" (RFC 6855 4)"""
    if r.take(b"UTF8 ("):
        data = literal8(r)
        r.expect(b")")
        return data
    if r.peek() == ord("~"):
        return literal8(r)
    return literal(r)


def string(r: Reader) -> bytes:
    """string = quoted / literal"""
    if r.peek() == ord('"'):
        return quoted(r)
    return literal(r)


def astring(r: Reader) -> str:
    """astring = 1*ASTRING-CHAR / string"""
    if r.peek() in (ord('"'), ord("{")):
        return _text(string(r))
    value = _while(r, ASTRING_CHARS)
    if not value:
        raise ParseError("expected a string")
    return _text(value)


def nstring(r: Reader) -> str | None:
    """nstring = string / nil"""
    if r.take(b"NIL"):
        return None
    return _text(string(r))


def mailbox(r: Reader) -> str:
    """mailbox = "INBOX" / astring (INBOX is case-insensitive)"""
    name = astring(r)
    return "INBOX" if name.upper() == "INBOX" else name


def list_mailbox(r: Reader) -> str:
    """list-mailbox = 1*list-char / string"""
    if r.peek() in (ord('"'), ord("{")):
        return _text(string(r))
    value = _while(r, LIST_CHARS)
    if not value:
        raise ParseError("expected a mailbox pattern")
    return _text(value)


def number(r: Reader) -> int:
    """number = 1*DIGIT (number64 where larger values are allowed)"""
    digits = _while(r, b"0123456789")
    if not digits or len(digits) > 20:
        raise ParseError("expected a number")
    return int(digits)


def nz_number(r: Reader) -> int:
    """nz-number = digit-nz *DIGIT"""
    value = number(r)
    if value == 0 or value > 0xFFFFFFFF:
        raise ParseError("expected a non-zero 32-bit number")
    return value


def seq_number(r: Reader) -> int:
    """seq-number = nz-number / "*" """
    if r.take(b"*"):
        return STAR
    return nz_number(r)


def sequence_set(r: Reader) -> SequenceSet:
    """sequence-set = (seq-number / seq-range) ["," sequence-set]; seq-range =
    seq-number ":" seq-number; "$" (RFC 5182) is the saved search result"""
    if r.take(b"$"):
        return SequenceSet((), saved=True)
    ranges: list[tuple[int, int]] = []
    while True:
        first = seq_number(r)
        last = seq_number(r) if r.take(b":") else first
        ranges.append((first, last))
        if not r.take(b","):
            return SequenceSet(tuple(ranges))


def flag(r: Reader) -> str:
    """flag = "\\Answered" / "\\Flagged" / "\\Deleted" / "\\Seen" / "\\Draft" /
    flag-keyword / flag-extension"""
    if r.take(b"\\"):
        name = atom(r)
        for known in ("Answered", "Flagged", "Deleted", "Seen", "Draft"):
            if name.lower() == known.lower():
                return "\\" + known
        return "\\" + name
    return atom(r)


def flag_list(r: Reader) -> tuple[str, ...]:
    """flag-list = "(" [flag *(SP flag)] ")" """
    r.expect(b"(")
    flags: list[str] = []
    if not r.take(b")"):
        while True:
            flags.append(flag(r))
            if r.take(b")"):
                break
            r.sp()
    return tuple(flags)


def store_flags(r: Reader) -> tuple[str, ...]:
    """flag-list / (flag *(SP flag))"""
    if r.peek() == ord("("):
        return flag_list(r)
    flags = [flag(r)]
    while r.take(b" "):
        flags.append(flag(r))
    return tuple(flags)


def _date_text(r: Reader, fixed: bool) -> tuple[int, int, int]:
    if fixed and r.take(b" "):
        day = number(r)
    else:
        day = number(r)
    r.expect(b"-")
    month_name = r.line[r.pos : r.pos + 3].upper().decode("ascii", "replace")
    if month_name not in _MONTHS:
        raise ParseError("bad month")
    r.pos += 3
    r.expect(b"-")
    year = number(r)
    return day, _MONTHS.index(month_name) + 1, year


def date(r: Reader) -> datetime:
    """date = date-text / DQUOTE date-text DQUOTE;
    date-text = date-day "-" date-month "-" date-year"""
    quote = r.take(b'"')
    day, month, year = _date_text(r, fixed=False)
    if quote:
        r.expect(b'"')
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError as exc:
        raise ParseError("bad date") from exc


def date_time(r: Reader) -> datetime:
    """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year
    SP time SP zone DQUOTE"""
    r.expect(b'"')
    day, month, year = _date_text(r, fixed=True)
    r.sp()
    clock = r.line[r.pos : r.pos + 8]
    r.pos += 8
    r.sp()
    zone = r.line[r.pos : r.pos + 5]
    r.pos += 5
    r.expect(b'"')
    try:
        hh, mm, ss = (int(x) for x in clock.split(b":"))
        if len(zone) != 5 or zone[0:1] not in (b"+", b"-") or not zone[1:].isdigit():
            raise ValueError(zone)
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        tz = timezone(-offset if zone[0:1] == b"-" else offset)
        return datetime(year, month, day, hh, mm, ss, tzinfo=tz)
    except ValueError as exc:
        raise ParseError("bad date-time") from exc


def section(r: Reader) -> c.Section:
    """section = "[" [section-spec] "]"; section-spec = section-msgtext /
    (section-part ["." section-text]); section-text = section-msgtext / "MIME";
    section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT" """
    r.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while (byte := r.peek()) is not None and 0x30 <= byte <= 0x39:
        part.append(nz_number(r))
        if not r.take(b"."):
            break
    if r.peek() == ord("]") and r.line[r.pos - 1 : r.pos] == b".":
        raise ParseError("bad section")
    if r.peek() != ord("]"):
        if part and r.line[r.pos - 1 : r.pos] != b".":
            raise ParseError("bad section")
        for name in ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME"):
            if r.take(name.encode()):
                text = name
                break
        else:
            raise ParseError("bad section text")
        if text == "MIME" and not part:
            raise ParseError("MIME needs a part number")
        if text.startswith("HEADER.FIELDS"):
            r.sp()
            r.expect(b"(")
            names = [astring(r).upper()]
            while r.take(b" "):
                names.append(astring(r).upper())
            r.expect(b")")
            fields = tuple(names)
    r.expect(b"]")
    return c.Section(tuple(part), text, fields)


_SIMPLE_FETCH = (
    "ENVELOPE",
    "FLAGS",
    "INTERNALDATE",
    "RFC822.SIZE",
    "RFC822.HEADER",
    "RFC822.TEXT",
    "RFC822",
    "BODYSTRUCTURE",
    "UID",
    "MODSEQ",
    "BINARY.SIZE",
)
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


def fetch_att(r: Reader) -> c.FetchAtt:
    """fetch-att = "ENVELOPE" / "FLAGS" / "INTERNALDATE" /
    "RFC822" [".HEADER" / ".SIZE" / ".TEXT"] /
    "BODY" ["STRUCTURE"] / "UID" / "BODY" section [partial] / "BODY.PEEK" section [partial] /
    "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary"""
    word = (
        _while(r, _Chars(_ATOM_SPECIALS | {ord("["), ord("<")})).upper().decode("ascii", "replace")
    )
    if word in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE") and r.peek() == ord(
        "["
    ):
        sec = section(r)
        partial = None
        if r.take(b"<"):
            start = number(r)
            r.expect(b".")
            count = nz_number(r)
            r.expect(b">")
            partial = (start, count)
            if word == "BINARY.SIZE":
                raise ParseError("BINARY.SIZE takes no partial")
        if word.startswith("BINARY") and sec.text:
            raise ParseError("BINARY sections are part numbers only")
        return c.FetchAtt(word, sec, partial)
    if word in _SIMPLE_FETCH or word == "BODY":
        return c.FetchAtt(word)
    raise ParseError(f"unknown fetch item {word!r}")


def fetch_items(r: Reader) -> tuple[c.FetchAtt, ...]:
    """ "ALL" / "FULL" / "FAST" / fetch-att / "(" fetch-att *(SP fetch-att) ")" """
    for macro, names in _MACROS.items():
        if r.take(macro.encode()) and (r.peek() in (None, ord(" "), ord(")"))):
            return tuple(c.FetchAtt(name) for name in names)
    if r.take(b"("):
        items = [fetch_att(r)]
        while r.take(b" "):
            items.append(fetch_att(r))
        r.expect(b")")
        return tuple(items)
    return (fetch_att(r),)


_SEARCH_NOARG = {
    "ALL",
    "ANSWERED",
    "DELETED",
    "DRAFT",
    "FLAGGED",
    "NEW",
    "OLD",
    "RECENT",
    "SEEN",
    "UNANSWERED",
    "UNDELETED",
    "UNDRAFT",
    "UNFLAGGED",
    "UNSEEN",
}
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def search_key(r: Reader) -> c.SearchKey:
    """search-key = "ALL" / "ANSWERED" / "BCC" SP astring / "BEFORE" SP date / ... /
    "OR" SP search-key SP search-key / "NOT" SP search-key / sequence-set /
    "(" search-key *(SP search-key) ")" / "UID" SP sequence-set / "HEADER" SP
    header-fld-name SP astring / "LARGER" SP number64 / "SMALLER" SP number64 /
    "KEYWORD" SP flag-keyword / "UNKEYWORD" SP flag-keyword / "YOUNGER"/"OLDER" SP nz-number"""
    r.enter()
    try:
        if r.take(b"("):
            keys = [search_key(r)]
            while r.take(b" "):
                keys.append(search_key(r))
            r.expect(b")")
            return c.SearchKey("AND", tuple(keys))
        byte = r.peek()
        if byte is not None and (chr(byte).isdigit() or byte in b"*$"):
            return c.SearchKey("SEQ", (sequence_set(r),))
        word = atom(r).upper()
        if word in _SEARCH_NOARG:
            return c.SearchKey(word)
        r.sp()
        if word in _SEARCH_STRING:
            return c.SearchKey(word, (astring(r),))
        if word in _SEARCH_DATE:
            return c.SearchKey(word, (date(r),))
        if word in ("KEYWORD", "UNKEYWORD"):
            return c.SearchKey(word, (flag(r),))
        if word in ("LARGER", "SMALLER"):
            return c.SearchKey(word, (number(r),))
        if word in ("YOUNGER", "OLDER"):
            return c.SearchKey(word, (nz_number(r),))
        if word == "UID":
            return c.SearchKey(word, (sequence_set(r),))
        if word == "HEADER":
            name = astring(r)
            r.sp()
            return c.SearchKey(word, (name, astring(r)))
        if word == "NOT":
            return c.SearchKey(word, (search_key(r),))
        if word == "OR":
            first = search_key(r)
            r.sp()
            return c.SearchKey(word, (first, search_key(r)))
        if word == "MODSEQ":
            return modseq_search_key(r)
        raise ParseError(f"unknown search key {word!r}")
    finally:
        r.leave()


# -- CONDSTORE / QRESYNC (RFC 7162 7) -----------------------------------------

MAX_MODSEQ = 2**63 - 1


def mod_sequence(r: Reader, *, zero: bool = False) -> int:
    """mod-sequence-value = 1*DIGIT (1 to 2^63-1); mod-sequence-valzer also allows "0" """
    value = number(r)
    if value > MAX_MODSEQ or (value == 0 and not zero):
        raise ParseError("bad mod-sequence value")
    return value


def modseq_search_key(r: Reader) -> c.SearchKey:
    """search-modsequence = "MODSEQ" [search-modseq-ext] SP mod-sequence-valzer;
    search-modseq-ext = SP entry-name SP entry-type-req; entry-name =
    DQUOTE "/flags/" attr-flag DQUOTE; entry-type-req = "priv" / "shared" / "all"
    (the "MODSEQ" and its SP are already taken)"""
    if r.peek() == ord('"'):
        entry = _text(quoted(r))
        if not entry.lower().startswith("/flags/") or len(entry) == len("/flags/"):
            raise ParseError("bad MODSEQ entry name")
        r.sp()
        kind = atom(r).lower()
        if kind not in ("priv", "shared", "all"):
            raise ParseError("bad MODSEQ entry type")
        r.sp()
        return c.SearchKey("MODSEQ", (mod_sequence(r, zero=True), entry, kind))
    return c.SearchKey("MODSEQ", (mod_sequence(r, zero=True),))


def _known_set(r: Reader) -> SequenceSet:
    """sequence-set without "*" or "$" (known-uids, known-sequence-set, known-uid-set)"""
    if r.peek() == ord("$"):
        raise ParseError("$ is not allowed here")
    seqs = sequence_set(r)
    if any(STAR in pair for pair in seqs.ranges):
        raise ParseError("* is not allowed in QRESYNC sets")
    return seqs


def _qresync_param(r: Reader) -> c.Qresync:
    """ "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids]
    [SP seq-match-data] ")"; seq-match-data = "(" known-sequence-set SP
    known-uid-set ")" (the "QRESYNC " already taken)"""
    r.expect(b"(")
    uidvalidity = nz_number(r)
    r.sp()
    modseq = mod_sequence(r)
    known = None
    seq_match = None
    if r.take(b" "):
        if r.peek() != ord("("):
            known = _known_set(r)
            if r.take(b" "):
                seq_match = _seq_match(r)
        else:
            seq_match = _seq_match(r)
    r.expect(b")")
    return c.Qresync(uidvalidity, modseq, known, seq_match)


def _seq_match(r: Reader) -> tuple[SequenceSet, SequenceSet]:
    """seq-match-data = "(" known-sequence-set SP known-uid-set ")" """
    r.expect(b"(")
    seqs = _known_set(r)
    r.sp()
    uids = _known_set(r)
    r.expect(b")")
    return seqs, uids


def select_params(r: Reader) -> tuple[bool, c.Qresync | None]:
    """select-params = "(" select-param *(SP select-param) ")"; select-param =
    "CONDSTORE" / "QRESYNC" SP "(" ... ")" (RFC 7162 3.1.8, 3.2.5; RFC 4466
    2.2: an unknown parameter is an error)"""
    r.expect(b"(")
    condstore = False
    qresync: c.Qresync | None = None
    while True:
        word = atom(r).upper()
        if word == "CONDSTORE" and not condstore:
            condstore = True
        elif word == "QRESYNC" and qresync is None:
            r.sp()
            qresync = _qresync_param(r)
        else:
            raise ParseError(f"unknown or repeated SELECT parameter {word!r}")
        if r.take(b")"):
            return condstore, qresync
        r.sp()


def fetch_modifiers(r: Reader) -> tuple[int | None, bool]:
    """fetch-modifiers = "(" fetch-modifier *(SP fetch-modifier) ")";
    fetch-modifier =/ chgsince-fetch-mod / "VANISHED"; chgsince-fetch-mod =
    "CHANGEDSINCE" SP mod-sequence-value"""
    r.expect(b"(")
    changed_since: int | None = None
    vanished = False
    while True:
        word = atom(r).upper()
        if word == "CHANGEDSINCE" and changed_since is None:
            r.sp()
            changed_since = mod_sequence(r)
        elif word == "VANISHED" and not vanished:
            vanished = True
        else:
            raise ParseError(f"unknown or repeated FETCH modifier {word!r}")
        if r.take(b")"):
            return changed_since, vanished
        r.sp()


def _paren_atoms(r: Reader) -> tuple[str, ...]:
    r.expect(b"(")
    out: list[str] = []
    if r.take(b")"):
        return ()
    while True:
        out.append(atom(r).upper())
        if r.take(b")"):
            return tuple(out)
        r.sp()


def search(r: Reader, uid: bool) -> c.Search:
    """search = "SEARCH" [search-return-opts] SP ["CHARSET" SP charset SP]
    search-key *(SP search-key)"""
    returns: tuple[str, ...] | None = None
    if r.take(b"RETURN "):
        returns = _paren_atoms(r) or ("ALL",)
        r.sp()
    charset = None
    if r.take(b"CHARSET "):
        charset = astring(r).upper()
        r.sp()
    return c.Search(uid, search_keys(r), charset, returns)


def search_keys(r: Reader) -> c.SearchKey:
    """search-key *(SP search-key), one key (several are an AND)"""
    keys = [search_key(r)]
    while r.take(b" "):
        keys.append(search_key(r))
    return keys[0] if len(keys) == 1 else c.SearchKey("AND", tuple(keys))


def sort(r: Reader, uid: bool) -> c.Sort:
    """sort = ["UID" SP] "SORT" [search-return-opts] SP sort-criteria SP
    search-criteria (RFC 5256, ESORT RFC 5267); sort-criteria = "("
    sort-criterion *(SP sort-criterion) ")"; sort-criterion = ["REVERSE" SP]
    sort-key; search-criteria = charset 1*(SP search-key)"""
    returns: tuple[str, ...] | None = None
    if r.take(b"RETURN "):
        returns = _paren_atoms(r) or ("ALL",)
        r.sp()
    r.expect(b"(")
    criteria: list[tuple[str, bool]] = []
    while True:
        reverse = r.take(b"REVERSE ")
        name = atom(r).upper()
        if name not in SORT_CRITERIA:
            raise ParseError(f"unknown sort criterion {name!r}")
        criteria.append((name, reverse))
        if r.take(b")"):
            break
        r.sp()
    r.sp()
    charset = astring(r).upper()
    r.sp()
    return c.Sort(uid, tuple(criteria), search_keys(r), charset, returns)


def thread(r: Reader, uid: bool) -> c.Thread:
    """thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria (RFC 5256)"""
    algorithm = atom(r).upper()
    r.sp()
    charset = astring(r).upper()
    r.sp()
    return c.Thread(uid, algorithm, search_keys(r), charset)


def _append_message(r: Reader) -> c.AppendMessage:
    """append-message = [SP flag-list] [SP date-time] SP append-data (RFC 3502,
    the SP before it already taken)"""
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == ord("("):
        flags = flag_list(r)
        r.sp()
    if r.peek() == ord('"'):
        when = date_time(r)
        r.sp()
    return c.AppendMessage(flags, when, append_message(r))


def _setquota(r: Reader) -> c.SetQuota:
    """setquota = "SETQUOTA" SP quota-root-name SP setquota-list (RFC 9208);
    setquota-list = "(" [setquota-resource *(SP setquota-resource)] ")" """
    root = astring(r)
    r.sp()
    r.expect(b"(")
    limits: list[tuple[str, int]] = []
    while not r.take(b")"):
        name = atom(r).upper()
        r.sp()
        limits.append((name, number(r)))
        r.take(b" ")
    return c.SetQuota(root, tuple(limits))


def _list(r: Reader, lsub: bool) -> c.ListCmd:
    """list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]"""
    selection: tuple[str, ...] = ()
    if not lsub and r.peek() == ord("("):
        selection = _paren_atoms(r)
        r.sp()
    reference = mailbox(r) if r.peek() in (ord('"'), ord("{")) else _text(_while(r, LIST_CHARS))
    r.sp()
    patterns: list[str] = []
    if not lsub and r.take(b"("):
        patterns.append(list_mailbox(r))
        while r.take(b" "):
            patterns.append(list_mailbox(r))
        r.expect(b")")
    else:
        patterns.append(list_mailbox(r))
    returns: list[str] = []
    status_items: tuple[str, ...] = ()
    if not lsub and r.take(b" RETURN "):
        r.expect(b"(")
        while not r.take(b")"):
            word = atom(r).upper()
            if word == "STATUS":
                r.sp()
                status_items = _paren_atoms(r)
            returns.append(word)
            r.take(b" ")
    return c.ListCmd(reference, tuple(patterns), selection, tuple(returns), status_items, lsub)


def _id_params(r: Reader) -> tuple[tuple[str, str | None], ...] | None:
    """id-params-list = "(" *(string SP nstring) ")" / nil"""
    if r.take(b"NIL"):
        return None
    r.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while not r.take(b")"):
        key = _text(string(r))
        r.sp()
        params.append((key, nstring(r)))
        r.take(b" ")
        if len(params) > 30:  # RFC 2971 3.3: at most 30 pairs
            raise ParseError("too many ID parameters")
    return tuple(params)


def command(frame: Frame, max_depth: int = 16) -> c.Tagged:
    """command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF"""
    r = Reader(frame, max_depth)
    the_tag = tag(r)
    try:
        r.sp()
        cmd = _command_body(r)
        r.end()
    except ParseError as exc:
        raise TaggedParseError(the_tag, str(exc)) from exc
    except IndexError as exc:
        raise TaggedParseError(the_tag, "truncated command") from exc
    return c.Tagged(the_tag, cmd)


class TaggedParseError(ParseError):
    def __init__(self, tag: str, message: str) -> None:
        super().__init__(message)
        self.tag = tag


def _command_body(r: Reader) -> c.Command:
    name = atom(r).upper()
    uid = False
    if name == "UID":
        r.sp()
        uid = True
        name = atom(r).upper()
        if name not in ("FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"):
            raise ParseError("UID needs FETCH, SEARCH, STORE, COPY, MOVE, EXPUNGE, SORT or THREAD")
    simple: dict[str, c.Command] = {
        "CAPABILITY": c.Capability(),
        "NOOP": c.Noop(),
        "LOGOUT": c.Logout(),
        "STARTTLS": c.StartTls(),
        "NAMESPACE": c.Namespace(),
        "CHECK": c.Check(),
        "CLOSE": c.Close(),
        "UNSELECT": c.Unselect(),
        "IDLE": c.Idle(),
    }
    if name in simple:
        return simple[name]
    if name == "EXPUNGE":
        if uid:
            r.sp()
            return c.Expunge(sequence_set(r))
        return c.Expunge()
    r.sp()
    if name == "LOGIN":
        user = astring(r)
        r.sp()
        return c.Login(user, astring(r))
    if name == "AUTHENTICATE":
        mech = atom(r).upper()
        initial = None
        if r.take(b" "):
            initial = "=" if r.take(b"=") else _text(_while(r, ATOM_CHARS))
            if not initial:
                raise ParseError("bad initial response")
        return c.Authenticate(mech, initial)
    if name == "ENABLE":
        caps = [atom(r).upper()]
        while r.take(b" "):
            caps.append(atom(r).upper())
        return c.Enable(tuple(caps))
    if name in ("SELECT", "EXAMINE"):
        box = mailbox(r)
        condstore, qresync = select_params(r) if r.take(b" ") else (False, None)
        return c.Select(box, name == "EXAMINE", condstore, qresync)
    if name == "CREATE":
        box = mailbox(r)
        special = None
        if r.take(b" "):
            r.expect(b"(USE (")
            special = flag(r)
            r.expect(b"))")
        return c.Create(box, special)
    if name == "DELETE":
        return c.Delete(mailbox(r))
    if name == "RENAME":
        old = mailbox(r)
        r.sp()
        return c.Rename(old, mailbox(r))
    if name in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return c.Subscribe(mailbox(r), name == "SUBSCRIBE")
    if name in ("LIST", "LSUB"):
        return _list(r, name == "LSUB")
    if name == "STATUS":
        box = mailbox(r)
        r.sp()
        return c.Status(box, _paren_atoms(r))
    if name == "APPEND":
        box = mailbox(r)
        r.sp()
        first = _append_message(r)
        more: list[c.AppendMessage] = []
        while r.take(b" "):  # MULTIAPPEND (RFC 3502)
            more.append(_append_message(r))
        return c.Append(box, first.flags, first.date, first.message, tuple(more))
    if name == "SEARCH":
        return search(r, uid)
    if name == "SORT":
        return sort(r, uid)
    if name == "THREAD":
        return thread(r, uid)
    if name == "GETQUOTA":
        return c.GetQuota(astring(r))
    if name == "GETQUOTAROOT":
        return c.GetQuotaRoot(mailbox(r))
    if name == "SETQUOTA":
        return _setquota(r)
    if name == "COMPRESS":
        return c.Compress(atom(r).upper())
    if name == "FETCH":
        seq = sequence_set(r)
        r.sp()
        items = fetch_items(r)
        changed_since, vanished = fetch_modifiers(r) if r.take(b" ") else (None, False)
        if vanished and (not uid or changed_since is None):
            # RFC 7162 3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
            raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
        return c.Fetch(uid, seq, items, changed_since, vanished)
    if name == "STORE":
        seq = sequence_set(r)
        r.sp()
        unchanged_since = None
        if r.take(b"(UNCHANGEDSINCE "):  # RFC 7162 3.1.3 store-modifier
            unchanged_since = mod_sequence(r, zero=True)
            r.expect(b") ")
        mode: c.FlagMode = "replace"
        if r.take(b"+"):
            mode = "add"
        elif r.take(b"-"):
            mode = "remove"
        r.expect(b"FLAGS")
        silent = r.take(b".SILENT")
        r.sp()
        return c.Store(uid, seq, mode, silent, store_flags(r), unchanged_since)
    if name in ("COPY", "MOVE"):
        seq = sequence_set(r)
        r.sp()
        return c.Copy(uid, seq, mailbox(r), name == "MOVE")
    if name == "ID":
        return c.Id(_id_params(r))
    raise ParseError(f"unknown command {name}")
