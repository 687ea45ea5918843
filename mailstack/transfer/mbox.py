"""mbox reading and writing (RFC 4155, the mboxrd and mboxo variants).

A message starts at a ``From `` line at the start of the file or after an
empty line.  mboxrd quotes every body line matching ``>*From `` with one more
``>``, so unquoting is exact; mboxo only quoted ``From `` itself, so only
``>From `` is unquoted.  We write mboxrd.  Lines are LF in the file and CRLF
in the store (RFC 5322 2.1).

Flags travel in the headers mutt, Thunderbird and Dovecot use: ``Status``
(R = \\Seen; O = no longer new), ``X-Status`` (A \\Answered, F \\Flagged,
T \\Draft, D \\Deleted) and ``X-Keywords``.  They are removed from the
content on import (with the UW-IMAP/Dovecot state fields X-UID, X-IMAP and
X-IMAPbase) and added on export, so content survives a round trip; a
message that carried such a field in its own content loses it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, Literal

from mailstack import mime
from mailstack.transfer.source import (
    Deduper,
    Duplicate,
    SourceError,
    SourceFolder,
    SourceItem,
    SourceMessage,
    SourceUnreadable,
    key_of,
    to_crlf,
)

Variant = Literal["mboxrd", "mboxo"]

STATE_FIELDS = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase")
X_STATUS_LETTERS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
LETTER_OF_X_STATUS = {flag: letter for letter, flag in X_STATUS_LETTERS.items()}
_QUOTED = {"mboxrd": re.compile(rb"^>(>*From )"), "mboxo": re.compile(rb"^>(From )")}
_NEEDS_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)
_ASCTIME = "%a %b %d %H:%M:%S %Y"


class MboxError(SourceUnreadable):
    """The file is not an mbox."""


def _from_line_date(line: bytes) -> datetime | None:
    """The date at the end of ``From sender Thu Nov 29 03:29:44 2026`` (UTC,
    as RFC 4155 recommends; a trailing zone some writers add is ignored)."""
    words = line.decode("latin-1").split()
    for end in (len(words), len(words) - 1):
        try:
            return datetime.strptime(" ".join(words[end - 5 : end]), _ASCTIME).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _split_state(header: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """Remove the state fields from a LF header block; returns (rest, fields)."""
    kept: list[bytes] = []
    state: dict[bytes, bytes] = {}
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = bool(colon) and name.strip().lower() in STATE_FIELDS
        if dropping:
            state.setdefault(name.strip().lower(), value.strip())
        else:
            kept.append(line)
    return b"".join(kept), state


def _flags_of(state: dict[bytes, bytes]) -> frozenset[str]:
    flags = set()
    if b"R" in state.get(b"status", b""):
        flags.add("\\Seen")
    for letter in state.get(b"x-status", b"").decode("latin-1"):
        if letter in X_STATUS_LETTERS:
            flags.add(X_STATUS_LETTERS[letter])
    keywords = state.get(b"x-keywords", b"").decode("utf-8", "replace")
    flags.update(k for k in re.split(r"[\s,]+", keywords) if k)
    return frozenset(flags)


def _message(lines: list[bytes], from_line: bytes, label: str) -> SourceMessage | None:
    """None for UW-IMAP's folder-state pseudo message."""
    data = b"".join(lines)
    # The empty line before the next From line belongs to the format.
    if data.endswith(b"\r\n\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n\n"):
        data = data[:-1]
    body_start = mime.split_header(data, 0, len(data))
    header, state = _split_state(data[:body_start])
    body = data[body_start:]
    if b"x-imap" in state:
        return None
    raw = to_crlf(header + body)
    when = _from_line_date(from_line) or _date_header(raw) or datetime.now(UTC)
    return SourceMessage(label, raw, _flags_of(state), when)


def _date_header(raw: bytes) -> datetime | None:
    match = re.search(rb"^Date:[ \t]*(.+)$", raw.split(b"\r\n\r\n", 1)[0], re.M | re.I)
    if match is None:
        return None
    try:
        moment = parsedate_to_datetime(match.group(1).decode("latin-1").strip())
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_messages(
    f: BinaryIO, name: str, variant: Variant = "mboxrd"
) -> Iterator[SourceMessage | SourceError]:
    quoted = _QUOTED[variant]
    first = f.readline()
    if not first:
        return
    if not first.startswith(b"From "):
        raise MboxError(f"{name} is not an mbox (it does not start with a 'From ' line)")
    from_line, number, previous_empty = first, 1, False
    lines: list[bytes] = []
    for line in f:
        if previous_empty and line.startswith(b"From "):
            message = _message(lines, from_line, f"{name} message {number}")
            if message is not None:
                yield message
            from_line, lines, number = line, [], number + 1
            previous_empty = False
            continue
        previous_empty = line in (b"\n", b"\r\n")
        lines.append(quoted.sub(rb"\1", line) if line[:1] == b">" else line)
    message = _message(lines, from_line, f"{name} message {number}")
    if message is not None:
        yield message


def _file_items(path: Path, variant: Variant, deduper: Deduper) -> Iterator[SourceItem]:
    try:
        with path.open("rb") as f:
            for item in read_messages(f, str(path), variant):
                if isinstance(item, SourceMessage) and deduper.claim(key_of(item.raw)):
                    yield Duplicate(item.label, len(item.raw))
                else:
                    yield item
    except OSError as exc:
        yield SourceError(str(path), exc.strerror or str(exc))


# -- writing --------------------------------------------------------------------


def format_message(raw: bytes, flags: frozenset[str], internal_date: datetime) -> bytes:
    """One mboxrd entry (From line, state fields, quoted body, empty line)."""
    data = raw.replace(b"\r\n", b"\n")
    state = []
    if "\\Seen" in flags:
        state.append(b"Status: RO\n")
    x_status = "".join(sorted(LETTER_OF_X_STATUS[f] for f in flags if f in LETTER_OF_X_STATUS))
    if x_status:
        state.append(f"X-Status: {x_status}\n".encode())
    keywords = sorted(f for f in flags if not f.startswith("\\"))
    if keywords:
        state.append(f"X-Keywords: {' '.join(keywords)}\n".encode())
    if state:
        body_at = data.find(b"\n\n")
        cut = len(data) if body_at < 0 else body_at + 1
        if body_at < 0 and not data.endswith(b"\n"):
            data += b"\n"  # the fields need a line of their own
            cut = len(data)
        data = data[:cut] + b"".join(state) + data[cut:]
    data = _NEEDS_QUOTE.sub(rb">\1", data)
    if not data.endswith(b"\n"):
        data += b"\n"
    stamp = internal_date.astimezone(UTC).strftime(_ASCTIME)
    return b"From MAILER-DAEMON " + stamp.encode() + b"\n" + data + b"\n"


# -- folders <-> files ------------------------------------------------------------

SUFFIX = ".mbox"
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _file_level(level: str) -> str:
    """A hierarchy level as a path part: "%" and a leading "." are escaped, so
    no level can be "..", hidden, or confused with an escape."""
    escaped = level.replace("%", "%25")
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def _level_of_part(part: str) -> str:
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), part)


def export_path(root: Path, name: str) -> Path:
    """Folder "A/B" -> ROOT/A/B.mbox (A's own messages are in ROOT/A.mbox)."""
    levels = [_file_level(level) for level in name.split("/")]
    return root.joinpath(*levels[:-1], levels[-1] + SUFFIX)


def folders(path: Path, folder: str | None, variant: Variant = "mboxrd") -> list[SourceFolder]:
    """One folder for a file (named ``folder``, else after the file: "mbox"
    and "inbox" become INBOX); for a directory every ``*.mbox`` file below it,
    named by its relative path (under ``folder`` when given), as written by
    ``export_path``."""
    if path.is_file():
        stem = path.name.removesuffix(SUFFIX)
        name = folder or ("INBOX" if stem.lower() in ("mbox", "inbox") else _level_of_part(stem))
        return [SourceFolder(name, functools.partial(_file_items, path, variant))]
    if not path.is_dir():
        raise MboxError(f"{path} does not exist")
    found = []
    for file in sorted(path.rglob("*" + SUFFIX)):
        if not file.is_file():
            continue
        parts = list(file.relative_to(path).parts)
        parts[-1] = parts[-1].removesuffix(SUFFIX)
        name = "/".join(_level_of_part(part) for part in parts)
        found.append(
            SourceFolder(
                f"{folder}/{name}" if folder else name,
                functools.partial(_file_items, file, variant),
            )
        )
    if not found:
        raise MboxError(f"{path} holds no *{SUFFIX} file")
    return found
