"""PURE command framing: CRLF lines and the literals between them.

An IMAP command is one line, unless it carries literals (RFC 9051 4.3): a
line ending in ``{n}`` (synchronizing: the server answers ``+`` first) or
``{n+}`` (non-synchronizing, RFC 7888 LITERAL+) is followed by exactly n
octets and then the rest of the command.  Sizes are checked against the
configured limit *before* anything is read, so a ``{4294967296}``
announcement costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstack.wire import LineTooLong, ReceiveBuffer

_LITERAL = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n$")
# RFC 7888 4: without LITERAL+ a non-synchronizing literal is at most 4096 octets.
LITERAL_MINUS_MAX = 4096


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete command: ``lines[i]`` (CRLF removed) ends with the
    announcement of ``literals[i]`` for every i < len(literals)."""

    lines: tuple[bytes, ...]
    literals: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Continue:
    """Send a continuation request: the client waits for it before a synchronizing literal."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The command was dropped unread; ``fatal`` means the byte stream cannot be
    resynchronized (a non-synchronizing literal we will not read)."""

    tag: bytes | None
    code: str  # response code, e.g. "TOOBIG", or ""
    text: str
    fatal: bool


Event = Frame | Continue | Refused


def _tag_of(line: bytes) -> bytes | None:
    tag = line.split(b" ", 1)[0].strip()
    return tag if tag and len(line.split(b" ", 1)) > 1 else None


class Framer:
    def __init__(self, max_line: int, max_literal: int, *, literal_plus: bool = True) -> None:
        self._buf = ReceiveBuffer()
        self._max_line = max_line
        self._max_literal = max_literal
        self._literal_plus = literal_plus
        self._lines: list[bytes] = []
        self._literals: list[bytes] = []
        self._pending: int | None = None
        self._total = 0

    @property
    def eof(self) -> bool:
        return self._buf.eof

    @property
    def buffered(self) -> int:
        """Octets received but not yet framed (STARTTLS must see none, RFC 9051 6.2.1)."""
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """Nothing of a command received yet (between commands)."""
        return not self._lines and self._pending is None and not len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf.feed(data)

    def _reset(self) -> None:
        self._lines = []
        self._literals = []
        self._pending = None
        self._total = 0

    def next_line(self) -> bytes | None:
        """One raw line without its terminator (AUTHENTICATE responses, IDLE's DONE)."""
        try:
            line = self._buf.next_line(self._max_line)
        except LineTooLong:
            self._buf.discard_line()
            return b"*"  # treated as a cancelled / bad exchange by the callers
        return None if line is None else line.rstrip(b"\r\n")

    def next_event(self) -> Event | None:
        while True:
            if self._pending is not None:
                data = self._buf.read_exact(self._pending)
                if data is None:
                    return None
                self._literals.append(data)
                self._pending = None
                continue
            try:
                line = self._buf.next_line(self._max_line)
            except LineTooLong:
                self._buf.discard_line()
                tag = _tag_of(self._lines[0]) if self._lines else None
                self._reset()
                return Refused(tag, "", "Command line too long", fatal=False)
            if line is None:
                return None
            match = _LITERAL.search(line)
            if match is None:
                self._lines.append(line.rstrip(b"\r\n"))
                frame = Frame(tuple(self._lines), tuple(self._literals))
                self._reset()
                return frame
            size = int(match.group(1))
            sync = not match.group(2)
            first = self._lines[0] if self._lines else line
            limit = self._max_literal if (sync or self._literal_plus) else LITERAL_MINUS_MAX
            if size > limit or self._total + size > self._max_literal:
                self._reset()
                if sync:
                    # RFC 7889 / 9051 7.1: refuse before the client sends a byte.
                    return Refused(_tag_of(first), "TOOBIG", "Literal too large", fatal=False)
                return Refused(_tag_of(first), "TOOBIG", "Literal too large", fatal=True)
            self._lines.append(line[: match.start()] + b"{%d}" % size)
            self._pending = size
            self._total += size
            if sync:
                return Continue()
