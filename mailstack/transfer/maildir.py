"""Maildir, Maildir++ and Dovecot's Maildir layout: reading and the shared
naming and flag rules (writing is in ``export``).

* The root's ``cur``/``new`` is INBOX; Maildir++ subfolders are directories
  ``.Folder.Sub`` (hierarchy "."), Dovecot's LAYOUT=fs nests plain
  directories ``Folder/Sub``.  Each level is modified UTF-7 (RFC 3501
  5.1.3); a "." or "\\" inside a level is written as ``\\2e`` / ``\\5c``,
  Dovecot's listescape convention.
* Flags come from the ``:2,`` info (https://cr.yp.to/proto/maildir.html):
  D draft, F flagged, P passed, R replied, S seen, T trashed; Dovecot's
  lowercase letters a-z are keywords numbered by ``dovecot-keywords``.
* The internal date is the file's mtime (what Dovecot uses); messages are
  imported in ``dovecot-uidlist`` UID order when that file exists, keeping
  its UIDs and UIDVALIDITY when the target mailbox can take them
  (``Store.adopt_uidvalidity``), else in file-name order (which starts with
  the delivery time).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailstack.imap import mutf7
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

INFO_SEPARATOR = ":2,"
KEYWORDS_FILE = "dovecot-keywords"
UIDLIST_FILE = "dovecot-uidlist"
MAX_KEYWORD_LETTERS = 26

# Maildir info letters <-> IMAP flags.  P (passed) has no system flag; it is
# the $Forwarded keyword (RFC 5788 registry).
FLAG_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF_FLAG = {flag: letter for letter, flag in FLAG_LETTERS.items()}
_ESCAPE = re.compile(r"\\([0-9a-fA-F]{2})")
_SUBDIRS = ("cur", "new", "tmp")


class MaildirError(SourceUnreadable):
    """PATH is not a Maildir."""


# -- folder names -------------------------------------------------------------


def encode_level(level: str) -> str:
    """One hierarchy level as a Maildir++ directory-name part."""
    escaped = level.replace("\\", "\\5c").replace(".", "\\2e")
    return mutf7.encode(escaped)


def decode_level(text: str) -> str:
    try:
        decoded = mutf7.decode(text)
    except mutf7.Mutf7Error:
        decoded = text  # Dovecot with the UTF-8 option writes names unencoded
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), decoded)


def folder_dir_name(name: str) -> str:
    """Store name "A/B" -> ".A.B" (INBOX is the root itself)."""
    return "." + ".".join(encode_level(level) for level in name.split("/"))


# -- flags --------------------------------------------------------------------


def read_keywords(folder: Path) -> dict[str, str]:
    """letter -> keyword from ``dovecot-keywords`` ("<index> <keyword>" lines)."""
    letters: dict[str, str] = {}
    try:
        text = (folder / KEYWORDS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return letters
    for line in text.splitlines():
        index, _, keyword = line.strip().partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORD_LETTERS and keyword.strip():
            letters[chr(ord("a") + int(index))] = keyword.strip()
    return letters


def flags_from_info(info: str, keywords: dict[str, str]) -> frozenset[str]:
    flags = set()
    for letter in info:
        if letter in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[letter])
        elif letter in keywords:
            flags.add(keywords[letter])
    return frozenset(flags)


def info_from_flags(flags: frozenset[str], letter_of_keyword: dict[str, str]) -> str:
    """The ``2,`` info letters, in ASCII order as the Maildir spec asks."""
    letters = {LETTER_OF_FLAG[f] for f in flags if f in LETTER_OF_FLAG}
    letters.update(letter_of_keyword[f] for f in flags if f in letter_of_keyword)
    return "".join(sorted(letters))


# -- reading --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uidlist:
    """What ``dovecot-uidlist`` says about a folder."""

    uidvalidity: int | None = None
    next_uid: int = 1
    uids: dict[str, int] = field(default_factory=dict)  # base name (no info) -> UID


def _header_numbers(words: list[str]) -> tuple[int | None, int]:
    """(UIDVALIDITY, next UID) from the header after its version word:
    v1 "1 <uidvalidity> <nextuid>", v3 "3 V<uidvalidity> N<nextuid> G<guid> ..."."""
    version, rest = (words[0], words[1:]) if words else ("", [])
    if version == "1" and len(rest) >= 2 and rest[0].isdigit() and rest[1].isdigit():
        return int(rest[0]) or None, int(rest[1])
    fields = {word[:1]: word[1:] for word in rest if word[1:].isdigit()}
    uidvalidity = int(fields["V"]) if "V" in fields else None
    return uidvalidity or None, int(fields.get("N", "1"))


def read_uidlist(folder: Path) -> Uidlist:
    """``dovecot-uidlist`` v1 or v3; an empty Uidlist when there is none."""
    try:
        text = (folder / UIDLIST_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Uidlist()
    lines = text.splitlines()
    uidvalidity, next_uid = _header_numbers(lines[0].split() if lines else [])
    uids: dict[str, int] = {}
    for line in lines[1:]:
        uid, _, rest = line.partition(" ")
        if not uid.isdigit():
            continue
        # v3: "<uid> [ext fields] :<name>"; v1: "<uid> <name>"
        name = rest.partition(":")[2] if ":" in rest else rest.strip()
        if name:
            uids[name.split(INFO_SEPARATOR, 1)[0]] = int(uid)
    return Uidlist(uidvalidity, next_uid, uids)


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def find_folders(root: Path) -> list[tuple[str, Path]]:
    """(store name, directory) of every folder under a Maildir root."""
    if not root.is_dir():
        raise MaildirError(f"{root} is not a directory")
    found: list[tuple[str, Path]] = []
    if _is_maildir(root):
        found.append(("INBOX", root))
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name in _SUBDIRS or entry.name in (".", ".."):
            continue
        path = Path(entry.path)
        if entry.name.startswith("."):
            levels = entry.name[1:].split(".")
            if all(levels) and _is_maildir(path):
                found.append(("/".join(decode_level(level) for level in levels), path))
        else:
            found.extend(_fs_layout(path, [decode_level(entry.name)]))
    if not found:
        raise MaildirError(f"{root} holds no Maildir (no cur/ or new/ directory)")
    return found


def _fs_layout(path: Path, levels: list[str]) -> list[tuple[str, Path]]:
    """Dovecot LAYOUT=fs: plain nested directories, each a Maildir."""
    found = [("/".join(levels), path)] if _is_maildir(path) else []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir() and entry.name not in _SUBDIRS and not entry.name.startswith("."):
            found.extend(_fs_layout(Path(entry.path), [*levels, decode_level(entry.name)]))
    return found


def _message_files(folder: Path, uidlist: Uidlist) -> list[tuple[Path, bool, int | None]]:
    """(file, in new/, UID) ordered by uidlist UID, then by name.  Files the
    uidlist does not name yet get the UIDs Dovecot would give them next."""
    files: list[tuple[Path, bool]] = []
    for sub in ("cur", "new"):
        try:
            entries = list(os.scandir(folder / sub))
        except OSError:
            continue
        files.extend((Path(e.path), sub == "new") for e in entries if not e.name.startswith("."))

    def base(path: Path) -> str:
        return path.name.split(INFO_SEPARATOR, 1)[0]

    files.sort(key=lambda item: (uidlist.uids.get(base(item[0]), 1 << 62), base(item[0])))
    if uidlist.uidvalidity is None:
        return [(path, is_new, None) for path, is_new in files]
    next_uid = max([uidlist.next_uid, *(uid + 1 for uid in uidlist.uids.values())])
    result: list[tuple[Path, bool, int | None]] = []
    for path, is_new in files:
        uid = uidlist.uids.get(base(path))
        if uid is None:
            uid, next_uid = next_uid, next_uid + 1
        result.append((path, is_new, uid))
    return result


def read_message(
    path: Path, is_new: bool, keywords: dict[str, str], uid: int | None = None
) -> SourceMessage | SourceError:
    try:
        with path.open("rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime
            raw = f.read()
    except OSError as exc:
        return SourceError(str(path), exc.strerror or str(exc))
    if not raw.strip():
        return SourceError(str(path), "empty file")
    flags: frozenset[str] = frozenset()
    if not is_new and INFO_SEPARATOR in path.name:
        flags = flags_from_info(path.name.split(INFO_SEPARATOR, 1)[1], keywords)
    when = datetime.fromtimestamp(int(mtime), UTC)
    return SourceMessage(str(path), to_crlf(raw), flags, when, uid)


def _folder_items(path: Path, deduper: Deduper) -> Iterator[SourceItem]:
    keywords = read_keywords(path)
    for file, is_new, uid in _message_files(path, read_uidlist(path)):
        item = read_message(file, is_new, keywords, uid)
        if isinstance(item, SourceMessage) and deduper.claim(key_of(item.raw)):
            yield Duplicate(item.label, len(item.raw))
        else:
            yield item


def folders(root: Path) -> list[SourceFolder]:
    """Every folder of the Maildir tree at ``root`` (blocking: scans directories)."""
    result = []
    for name, path in find_folders(root):
        uidlist = read_uidlist(path)
        total = len(_message_files(path, uidlist))
        opener = functools.partial(_folder_items, path)
        result.append(SourceFolder(name, opener, total=total, uidvalidity=uidlist.uidvalidity))
    return result
