"""What every reader hands the importer, and duplicate detection.

A re-run of an import must copy only what is new.  Messages are matched by
Message-ID and size (sizes after line endings are made CRLF); a message
without a Message-ID is matched by the SHA-256 of its content.  Matching
counts copies, so a folder that really holds two identical messages keeps
both.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from mailstack import mime

# ("id", message-id, size) or ("sha256", hex digest, size)
DedupKey = tuple[str, str, int]

# The field with its continuation lines (RFC 5322 2.2.3).
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:[^\n]*(?:\n[ \t][^\n]*)*", re.I | re.M)


class SourceUnreadable(Exception):
    """A whole source (file, folder, server) cannot be read."""


@dataclass(frozen=True, slots=True)
class SourceMessage:
    label: str  # where it came from, for reports (a file name, "FILE message N", ...)
    raw: bytes
    flags: frozenset[str]
    internal_date: datetime  # timezone-aware
    uid: int | None = None  # the source's UID, kept when its UIDVALIDITY is


@dataclass(frozen=True, slots=True)
class SourceError:
    """A message that could not be read; reported by label and skipped."""

    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A message the target mailbox already holds."""

    label: str
    size: int


SourceItem = SourceMessage | SourceError | Duplicate


@dataclass(frozen=True, slots=True)
class SourceFolder:
    name: str  # store mailbox name, "/" as hierarchy delimiter
    # Blocking; called and iterated in a worker thread.
    open: Callable[[Deduper], Iterator[SourceItem]]
    total: int | None = None  # message count when cheaply known
    uidvalidity: int | None = None  # the source's, when its messages have UIDs


def to_crlf(raw: bytes) -> bytes:
    """RFC 5322 2.1 lines end in CRLF; Maildir files and mbox use bare LF.
    Every LF not preceded by CR gets one (a lone CR stays as it is)."""
    if raw.count(b"\n") == raw.count(b"\r\n"):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def message_id_of(raw: bytes) -> str | None:
    """The first Message-ID field, decoded exactly as the store's
    ``mime.analyze`` keeps it in ``MessageRecord.headers``."""
    # Only the one field is unfolded and decoded (parse_header_fields would
    # do every field: this runs for every imported message).
    body_start = mime.split_header(raw, 0, len(raw))
    match = _MESSAGE_ID.search(raw, 0, body_start)
    if match is None:
        return None
    for _, value in mime.parse_header_fields(match.group(0)):
        return _compact(mime.decode_words(value)) or None
    return None


def _compact(value: str) -> str:
    return "".join(value.split())


def key_of(raw: bytes) -> DedupKey:
    message_id = message_id_of(raw)
    return key_for(message_id, len(raw), raw)


def key_for(message_id: str | None, size: int, raw: bytes | None) -> DedupKey:
    """Key from a Message-ID (already known) and size; ``raw`` is needed only
    when there is no Message-ID."""
    if message_id:
        return ("id", _compact(message_id), size)
    if raw is None:
        raise ValueError("a message without Message-ID is matched by content")
    return ("sha256", hashlib.sha256(raw).hexdigest(), size)


class Deduper:
    """The target mailbox's messages as a multiset of keys."""

    def __init__(self, existing: Counter[DedupKey]) -> None:
        self._remaining = existing

    def claim(self, key: DedupKey) -> bool:
        """True if the target already has this message (it is then used up)."""
        if self._remaining[key] > 0:
            self._remaining[key] -= 1
            return True
        return False
