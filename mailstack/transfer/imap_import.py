"""Copy every folder of another IMAP server (imaplib, in a worker thread).

The URL is ``imaps://user@host[:port]`` (TLS from the start, port 993) or
``imap://user@host[:port]`` (STARTTLS is required, port 143); the password
never appears in it.  Per folder we EXAMINE it (read-only: the source's
\\Seen flags stay as they were, RFC 9051 6.3.3), fetch UID, RFC822.SIZE,
FLAGS, INTERNALDATE and the Message-ID of every message, skip what the
target already holds (``source.Deduper``: Message-ID + size, no download),
and fetch only the rest with BODY.PEEK[] (RFC 9051 6.4.5), in chunks.
The source's UIDs and UIDVALIDITY are kept where the target mailbox can
take them (``Store.adopt_uidvalidity``), so after moving a server under the
same name the clients' caches stay valid.
"""

from __future__ import annotations

import functools
import imaplib
import re
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

import trio

from mailstack.imap import mutf7
from mailstack.store.store import Store
from mailstack.transfer.importer import import_folders
from mailstack.transfer.progress import MIB, Progress, Summary
from mailstack.transfer.source import (
    Deduper,
    Duplicate,
    SourceError,
    SourceFolder,
    SourceItem,
    SourceMessage,
    SourceUnreadable,
    key_for,
    key_of,
    message_id_of,
    to_crlf,
)

DEFAULT_PORTS = {"imaps": 993, "imap": 143}
SOCKET_TIMEOUT = 120.0  # seconds without any byte from the server
FETCH_MESSAGES = 100
FETCH_BYTES = 8 * MIB
METADATA = "(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_FETCH_START = re.compile(rb"^\d+ \(")
_STATUS_MESSAGES = re.compile(rb"\bMESSAGES (\d+)")
_STATUS_UIDVALIDITY = re.compile(rb"\bUIDVALIDITY (\d+)")
_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:\\.|[^"\\])*") ?(?P<name>.*)$')


class ImapSourceError(SourceUnreadable):
    """The source server refused or broke the session."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    implicit_tls: bool
    user: str
    host: str
    port: int


def parse_url(url: str) -> ImapUrl:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"expected imaps://user@host[:port] or imap://user@host[:port], got {url!r}"
        )
    if parts.password is not None:
        raise ValueError("put no password in the URL: it is read from stdin")
    if not parts.username or not parts.hostname:
        raise ValueError(f"the URL needs a user and a host: {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r}") from exc
    return ImapUrl(parts.scheme == "imaps", unquote(parts.username), parts.hostname, port)


def _quote(name: bytes) -> str:
    """A mailbox name as an IMAP quoted string (RFC 9051 4.3)."""
    text = name.decode("ascii", "replace")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(text: bytes) -> bytes:
    if text.startswith(b'"') and text.endswith(b'"') and len(text) >= 2:
        return re.sub(rb"\\(.)", rb"\1", text[1:-1])
    return text


def _fetch_entries(data: list[object]) -> list[tuple[bytes, bytes | None]]:
    """imaplib's FETCH data as (response text, literal or None) per message."""
    entries: list[list[bytes | None]] = []
    for item in data:
        if isinstance(item, tuple):
            entries.append([bytes(item[0]), bytes(item[1])])
        elif isinstance(item, bytes):
            if _FETCH_START.match(item):
                entries.append([item, None])
            elif entries:  # the rest of a response after its literal
                head = entries[-1][0]
                assert head is not None
                entries[-1][0] = head + item
    return [(bytes(text or b""), literal) for text, literal in entries]


def _internal_date(text: bytes) -> datetime | None:
    try:
        return datetime.strptime(text.decode("ascii").strip(), "%d-%b-%Y %H:%M:%S %z")
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class _Meta:
    uid: int
    size: int
    flags: frozenset[str]
    internal_date: datetime | None
    message_id: str | None


def _decode_name(raw: bytes, delimiter: str | None) -> str:
    try:
        text = mutf7.decode(raw.decode("ascii"))
    except (UnicodeDecodeError, mutf7.Mutf7Error):
        text = raw.decode("utf-8", "replace")  # a server with UTF8=ACCEPT semantics
    return text if not delimiter else "/".join(text.split(delimiter))


class ImapSource:
    """One logged-in session; every method blocks (call from a worker thread)."""

    def __init__(self, url: ImapUrl, password: str, context: ssl.SSLContext) -> None:
        self._url = url
        try:
            if url.implicit_tls:
                self._conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    url.host, url.port, ssl_context=context, timeout=SOCKET_TIMEOUT
                )
            else:
                self._conn = imaplib.IMAP4(url.host, url.port, timeout=SOCKET_TIMEOUT)
                if "STARTTLS" not in self._conn.capabilities:
                    raise ImapSourceError(f"{url.host} does not offer STARTTLS; use imaps://")
                self._conn.starttls(ssl_context=context)
            self._conn.login(url.user, password)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapSourceError(f"{url.host}:{url.port}: {exc}") from None

    def _check(self, what: str, result: tuple[str, Sequence[object]]) -> list[object]:
        typ, data = result
        if typ != "OK":
            detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise ImapSourceError(f"{what} failed: {detail}")
        return list(data)

    def folders(self) -> list[SourceFolder]:
        found: list[SourceFolder] = []
        data = self._check("LIST", self._conn.list('""', "*"))
        for item in data:
            line = bytes(item[0]) + b" " if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            match = _LIST.match(line.strip())
            if match is None:
                continue
            attributes = match.group("attrs").lower().split()
            if b"\\noselect" in attributes or b"\\nonexistent" in attributes:
                continue
            if isinstance(item, tuple):
                raw_name = bytes(item[1])
            else:
                raw_name = _unquote(match.group("name").strip())
            delim = _unquote(match.group("delim"))
            delimiter = None if delim == b"NIL" else delim.decode("ascii", "replace")
            name = _decode_name(raw_name, delimiter)
            if name.upper() == "INBOX":
                name = "INBOX"
            total, uidvalidity = self._status(raw_name)
            found.append(
                SourceFolder(
                    name,
                    functools.partial(self._items, raw_name, name),
                    total=total,
                    uidvalidity=uidvalidity,
                )
            )
        return found

    def _status(self, raw_name: bytes) -> tuple[int | None, int | None]:
        """(MESSAGES, UIDVALIDITY) of a folder (RFC 9051 6.3.11); Nones if
        the server will not say."""
        typ, data = self._conn.status(_quote(raw_name), "(MESSAGES UIDVALIDITY)")
        text = b" ".join(d for d in data if isinstance(d, bytes)) if typ == "OK" else b""
        messages, uidvalidity = _STATUS_MESSAGES.search(text), _STATUS_UIDVALIDITY.search(text)
        return (
            int(messages.group(1)) if messages else None,
            int(uidvalidity.group(1)) if uidvalidity else None,
        )

    def _items(self, raw_name: bytes, name: str, deduper: Deduper) -> Iterator[SourceItem]:
        try:
            yield from self._folder_items(raw_name, name, deduper)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapSourceError(f"{name}: {exc}") from None

    def _folder_items(self, raw_name: bytes, name: str, deduper: Deduper) -> Iterator[SourceItem]:
        data = self._check(f"EXAMINE {name}", self._conn.select(_quote(raw_name), readonly=True))
        if not data or data[0] in (b"0", None):
            return
        metas = self._metadata(name)
        wanted: list[_Meta] = []
        for meta in metas:
            if meta.message_id and deduper.claim(key_for(meta.message_id, meta.size, None)):
                yield Duplicate(f"{name} UID {meta.uid}", meta.size)
            else:
                wanted.append(meta)
        start = 0
        while start < len(wanted):
            end, size = start, 0
            while end < len(wanted) and end - start < FETCH_MESSAGES and size < FETCH_BYTES:
                size += wanted[end].size
                end += 1
            yield from self._bodies(name, wanted[start:end], deduper)
            start = end

    def _metadata(self, name: str) -> list[_Meta]:
        data = self._check(f"FETCH in {name}", self._conn.uid("FETCH", "1:*", METADATA))
        metas: dict[int, _Meta] = {}
        for text, literal in _fetch_entries(data):
            uid, size = _UID.search(text), _SIZE.search(text)
            if uid is None or size is None:
                continue  # an unsolicited FETCH (a flag change elsewhere)
            flags = _FLAGS.search(text)
            date = _DATE.search(text)
            flag_set = frozenset(
                f
                for f in (flags.group(1).decode("utf-8", "replace").split() if flags else [])
                if f.lower() != "\\recent"  # RFC 9051 dropped \Recent; it is session state
            )
            header = literal or b""
            metas[int(uid.group(1))] = _Meta(
                int(uid.group(1)),
                int(size.group(1)),
                flag_set,
                _internal_date(date.group(1)) if date else None,
                message_id_of(header + b"\r\n") if header.strip() else None,
            )
        return [metas[uid] for uid in sorted(metas)]

    def _bodies(self, name: str, metas: list[_Meta], deduper: Deduper) -> Iterator[SourceItem]:
        uid_set = ",".join(str(m.uid) for m in metas)
        data = self._check(
            f"FETCH in {name}", self._conn.uid("FETCH", uid_set, "(UID BODY.PEEK[])")
        )
        bodies: dict[int, bytes] = {}
        for text, literal in _fetch_entries(data):
            uid = _UID.search(text)
            if uid is not None and literal is not None:
                bodies[int(uid.group(1))] = literal
        for meta in metas:
            label = f"{name} UID {meta.uid}"
            raw = bodies.get(meta.uid)
            if raw is None:
                yield SourceError(label, "expunged on the source during the import")
                continue
            raw = to_crlf(raw)
            if not meta.message_id and deduper.claim(key_of(raw)):
                yield Duplicate(label, len(raw))
                continue
            when = meta.internal_date or datetime.now().astimezone()
            yield SourceMessage(label, raw, meta.flags, when, meta.uid)

    def logout(self) -> None:
        try:
            self._conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # already gone; nothing to clean up


async def import_from_imap(
    store: Store,
    account_id: int,
    url: ImapUrl,
    password: str,
    context: ssl.SSLContext,
    progress: Progress,
    stop: trio.Event,
) -> Summary:
    """Log in, copy every folder, log out.  Raises ImapSourceError when the
    server cannot be reached or refuses the login."""
    source = await trio.to_thread.run_sync(ImapSource, url, password, context)
    try:
        folders = await trio.to_thread.run_sync(source.folders)
        progress.set_total(sum(f.total or 0 for f in folders))
        return await import_folders(store, account_id, folders, progress, stop)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(source.logout)
