"""PURE SEARCH evaluation (RFC 9051 6.4.4, RFC 3501 6.4.4, RFC 5032 WITHIN).

String keys match case-insensitively as substrings of the decoded (RFC 2047,
quoted-printable, base64, charset) text.  The caller loads message content
only when :func:`needs_content` says a key looks at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime

from mailstack import mime
from mailstack.imap.commands import SearchKey
from mailstack.imap.sequence import SequenceSet
from mailstack.store.records import MessageRecord

_CONTENT_KEYS = {"BODY", "TEXT", "HEADER"}
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}


def needs_content(key: SearchKey) -> bool:
    if key.op in _CONTENT_KEYS:
        return True
    return any(isinstance(arg, SearchKey) and needs_content(arg) for arg in key.args)


@dataclass
class Candidate:
    """One message as SEARCH sees it."""

    seq: int
    record: MessageRecord
    flags: frozenset[str]  # as this session knows them
    raw: bytes | None = None  # loaded when needs_content
    _tree: mime.Part | None = field(default=None, repr=False)
    _text: str | None = field(default=None, repr=False)

    def tree(self) -> mime.Part:
        if self._tree is None:
            self._tree = mime.parse_tree(self.raw or b"")
        return self._tree

    def body_text(self) -> str:
        if self._text is None:
            self._text = mime.text_content(self.raw or b"", self.tree()).casefold()
        return self._text


@dataclass(frozen=True)
class Scope:
    """Mailbox-wide values keys need: the largest sequence number and UID, and "now"."""

    max_seq: int
    max_uid: int
    now: datetime
    saved: tuple[int, ...] = ()  # RFC 5182 $ (UIDs)


def _day(when: datetime) -> date:
    return when.date()


def _sent_date(record: MessageRecord) -> date | None:
    value = record.headers.get("date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError):
        return None


def _contains(haystack: str | None, needle: str) -> bool:
    return haystack is not None and needle.casefold() in haystack.casefold()


def matches(key: SearchKey, msg: Candidate, scope: Scope) -> bool:
    op = key.op
    args = key.args
    if op == "AND":
        return all(matches(k, msg, scope) for k in args if isinstance(k, SearchKey))
    if op == "OR":
        a, b = args
        assert isinstance(a, SearchKey) and isinstance(b, SearchKey)
        return matches(a, msg, scope) or matches(b, msg, scope)
    if op == "NOT":
        (inner,) = args
        assert isinstance(inner, SearchKey)
        return not matches(inner, msg, scope)
    if op == "ALL":
        return True
    if op in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[op]
        return (flag in msg.flags) == present
    # \Recent is not kept (IMAP4rev2 removed it): nothing is recent.
    if op in ("NEW", "RECENT"):
        return False
    if op == "OLD":
        return True
    if op == "KEYWORD":
        return str(args[0]).casefold() in {f.casefold() for f in msg.flags}
    if op == "UNKEYWORD":
        return str(args[0]).casefold() not in {f.casefold() for f in msg.flags}
    if op in _ADDRESS_KEYS:
        return _contains(msg.record.headers.get(_ADDRESS_KEYS[op]), str(args[0]))
    if op == "LARGER":
        return msg.record.size > int(str(args[0]))
    if op == "SMALLER":
        return msg.record.size < int(str(args[0]))
    if op in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
        when = args[0]
        assert isinstance(when, datetime)
        if op.startswith("SENT"):
            day = _sent_date(msg.record)
            if day is None:
                return False
        else:
            day = _day(msg.record.internal_date)
        target = when.date()
        kind = op.removeprefix("SENT")
        return (
            day < target if kind == "BEFORE" else day == target if kind == "ON" else day >= target
        )
    if op in ("YOUNGER", "OLDER"):
        age = scope.now - msg.record.internal_date
        limit = timedelta(seconds=int(str(args[0])))
        return age <= limit if op == "YOUNGER" else age > limit
    if op == "SEQ":
        seqs = args[0]
        assert isinstance(seqs, SequenceSet)
        if seqs.saved:
            return msg.record.uid in scope.saved
        return seqs.contains(msg.seq, scope.max_seq)
    if op == "UID":
        uids = args[0]
        assert isinstance(uids, SequenceSet)
        if uids.saved:
            return msg.record.uid in scope.saved
        return uids.contains(msg.record.uid, scope.max_uid)
    if op == "MODSEQ":
        return msg.record.modseq >= int(str(args[0]))
    if op == "HEADER":
        name, value = str(args[0]).lower(), str(args[1])
        found = [v for k, v in msg.tree().headers if k == name]
        return any(_contains(mime.decode_words(v), value) for v in found)
    if op == "BODY":
        return str(args[0]).casefold() in msg.body_text()
    if op == "TEXT":
        needle = str(args[0]).casefold()
        headers = " ".join(mime.decode_words(v) for _, v in msg.tree().headers).casefold()
        return needle in headers or needle in msg.body_text()
    raise ValueError(f"unknown search key {op}")
