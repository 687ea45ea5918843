"""PURE receive buffer shared by the SMTP, IMAP and POP3 cores.

Bytes go in with ``feed``; complete CRLF-terminated lines or exact byte counts
come out.  The buffer remembers how far it already searched for the line end,
so a line that arrives one byte at a time costs O(n), not O(n^2).  A line that
grows past ``max_line`` raises :class:`LineTooLong` once the limit is crossed,
without waiting for (or storing) the rest; the caller then chooses between
``discard_line`` (skip to the next line end, keeping the session) and closing.
"""

from __future__ import annotations


class LineTooLong(Exception):
    """The pending line exceeds the limit the caller passed."""


class ReceiveBuffer:
    def __init__(self) -> None:
        self._data = bytearray()
        self._scanned = 0  # bytes of _data already searched for "\n"
        self._discarding = False
        self.eof = False

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        """Append received bytes; ``b""`` marks end of stream."""
        if not data:
            self.eof = True
            return
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                return
            self._discarding = False
            data = data[end + 1 :]
        self._data += data

    def next_line(self, max_line: int) -> bytes | None:
        """The next line including its terminator, or None if incomplete.

        Lines end at LF; whether a bare LF (no CR before it) is acceptable is
        the protocol's decision, so the terminator is returned as received.
        """
        end = self._data.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = size = len(self._data)
            # max_line bytes without the LF: the line will be longer than
            # max_line whatever comes next, so say so now.
            if size >= max_line:
                raise LineTooLong(size + 1)
            return None
        if end + 1 > max_line:
            raise LineTooLong(end + 1)
        line = bytes(self._data[: end + 1])
        del self._data[: end + 1]
        self._scanned = 0
        return line

    def discard_line(self) -> None:
        """Drop the current (over-long) line up to and including its LF,
        also the part not yet received."""
        end = self._data.find(b"\n")
        if end >= 0:
            del self._data[: end + 1]
        else:
            self._data.clear()
            self._discarding = True
        self._scanned = 0

    def read_exact(self, count: int) -> bytes | None:
        """Exactly ``count`` bytes (a literal or BDAT chunk), or None if not all here yet."""
        if len(self._data) < count:
            return None
        chunk = bytes(self._data[:count])
        del self._data[:count]
        self._scanned = 0
        return chunk

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` buffered bytes (streaming a large literal)."""
        chunk = bytes(self._data[:limit])
        del self._data[:limit]
        self._scanned = 0
        return chunk

    def take_all(self) -> bytes:
        """Everything buffered (used to detect data pipelined before STARTTLS)."""
        rest = bytes(self._data)
        self._data.clear()
        self._scanned = 0
        return rest
