"""PURE typed commands produced by the grammar (one frozen dataclass per command)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mailstack.imap.sequence import SequenceSet


@dataclass(frozen=True, slots=True)
class Section:
    """BODY[section] (RFC 9051 6.4.5): part path, then "", HEADER, HEADER.FIELDS,
    HEADER.FIELDS.NOT, TEXT or MIME."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One fetch-att: name in upper case (FLAGS, BODY, BODY.PEEK, BINARY, ...)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # <offset.count>


@dataclass(frozen=True, slots=True)
class SearchKey:
    """A search-key: ``op`` upper case; ``args`` are str/int/datetime/SequenceSet
    or nested SearchKey (AND = "ALL" list under op "AND", OR, NOT)."""

    op: str
    args: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class Capability:
    pass


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class StartTls:
    pass


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str
    initial: str | None  # SASL-IR (RFC 4959), "=" for empty


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Qresync:
    """SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]))
    (RFC 7162 3.2.5); ``seq_match`` pairs message numbers with UIDs."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    readonly: bool
    condstore: bool = False  # (CONDSTORE) parameter, RFC 7162 3.1.8
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Create:
    mailbox: str
    special_use: str | None = None  # RFC 6154 CREATE-SPECIAL-USE


@dataclass(frozen=True, slots=True)
class Delete:
    mailbox: str


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    mailbox: str
    subscribe: bool


@dataclass(frozen=True, slots=True)
class ListCmd:
    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()  # RFC 5258 selection options, upper case
    returns: tuple[str, ...] = ()  # RFC 5258 return options (SUBSCRIBED, CHILDREN, SPECIAL-USE)
    status_items: tuple[str, ...] = ()  # RFC 5819 RETURN (STATUS (...))
    lsub: bool = False


@dataclass(frozen=True, slots=True)
class Namespace:
    pass


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One more message of a MULTIAPPEND (RFC 3502)."""

    flags: tuple[str, ...]
    date: datetime | None
    message: bytes


@dataclass(frozen=True, slots=True)
class Append:
    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes
    more: tuple[AppendMessage, ...] = ()  # MULTIAPPEND: the messages after the first


@dataclass(frozen=True, slots=True)
class Check:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Unselect:
    pass


@dataclass(frozen=True, slots=True)
class Expunge:
    uids: SequenceSet | None = None  # UID EXPUNGE (RFC 4315)


@dataclass(frozen=True, slots=True)
class Search:
    uid: bool
    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # RFC 4731 RETURN (...); None = plain SEARCH


@dataclass(frozen=True, slots=True)
class Fetch:
    uid: bool
    sequence: SequenceSet
    items: tuple[FetchAtt, ...]
    changed_since: int | None = None  # (CHANGEDSINCE n), RFC 7162 3.1.4
    vanished: bool = False  # (... VANISHED), RFC 7162 3.2.6


FlagMode = Literal["add", "remove", "replace"]


@dataclass(frozen=True, slots=True)
class Store:
    uid: bool
    sequence: SequenceSet
    mode: FlagMode
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # (UNCHANGEDSINCE n), RFC 7162 3.1.3


@dataclass(frozen=True, slots=True)
class Copy:
    uid: bool
    sequence: SequenceSet
    mailbox: str
    move: bool


@dataclass(frozen=True, slots=True)
class Sort:
    """SORT (RFC 5256) and ESORT's RETURN options (RFC 5267)."""

    uid: bool
    criteria: tuple[tuple[str, bool], ...]  # (sort-key, REVERSE), most significant first
    key: SearchKey
    charset: str
    returns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Thread:
    uid: bool
    algorithm: str  # ORDEREDSUBJECT or REFERENCES (RFC 5256)
    key: SearchKey
    charset: str


@dataclass(frozen=True, slots=True)
class GetQuota:
    root: str


@dataclass(frozen=True, slots=True)
class GetQuotaRoot:
    mailbox: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Compress:
    mechanism: str  # RFC 4978: DEFLATE


@dataclass(frozen=True, slots=True)
class Id:
    params: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True, slots=True)
class Idle:
    pass


Command = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | ListCmd
    | Namespace
    | Status
    | Append
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Fetch
    | Store
    | Copy
    | Id
    | Idle
    | Sort
    | Thread
    | GetQuota
    | GetQuotaRoot
    | SetQuota
    | Compress
)


@dataclass(frozen=True, slots=True)
class Tagged:
    tag: str
    command: Command
