"""PURE decoder for the DATA phase (RFC 5321 4.1.1.4, 4.5.2).

Only ``<CRLF>.<CRLF>`` ends the data.  A bare CR or LF anywhere in the data
rejects the whole message (the 2023 "SMTP smuggling" class: a receiver that
took ``<LF>.<LF>`` or ``<CR>.<CR><LF>`` as the end would run the rest as
commands, i.e. a second, forged message); because the end is found only at
``<CRLF>.<CRLF>``, whatever follows such a sequence stays data and can never
be executed.  Transparency (4.5.2): one leading dot is removed from each line.

Limits are checked without buffering more than one text line: past
``max_size`` the content is dropped while the end is still looked for (552
5.3.4 once it arrives), and a line longer than 1000 octets (4.5.3.1.6) is
noted and discarded (500 5.5.6 once the data ends).  The work is done on
whole received chunks with bytes methods, not per line in Python.
"""

from __future__ import annotations

import enum

# RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
MAX_TEXT_LINE = 1000


class Problem(enum.Enum):
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"
    BARE_LINE_ENDING = "bare CR or LF"


# A line longer than MAX_TEXT_LINE has at least MAX_TEXT_LINE octets before
# its LF, so it covers a whole aligned block of half that size: only blocks
# without any LF need a closer look (a few C-level finds per 64 KiB).
_BLOCK = MAX_TEXT_LINE // 2


def _has_long_line(lines: bytes) -> bool:
    """Whether a line of ``lines`` (complete lines) exceeds MAX_TEXT_LINE octets."""
    for block in range(0, len(lines), _BLOCK):
        if lines.find(b"\n", block, block + _BLOCK) >= 0:
            continue
        start = lines.rfind(b"\n", 0, block) + 1
        end = lines.find(b"\n", block)
        if end - start + 1 > MAX_TEXT_LINE:
            return True
    return False


class DataDecoder:
    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._parts: list[bytes] = []
        self.size = 0  # unstuffed octets seen, also after the limit
        self._carry = b""  # an incomplete line
        self._skipping = False  # inside an over-long line, waiting for its LF
        self._skip_last_cr = False
        self._line_start_after_crlf = True  # the data so far ends with CRLF
        self.problems: set[Problem] = set()
        self.done = False

    def feed(self, chunk: bytes) -> bytes | None:
        """Consume received bytes.  None while the data goes on; once the
        end marker is seen, the bytes after it (pipelined commands)."""
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                if chunk:
                    self._skip_last_cr = chunk.endswith(b"\r")
                return None
            before = (
                chunk[newline - 1 : newline] if newline else (b"\r" if self._skip_last_cr else b"")
            )
            self._line_start_after_crlf = before == b"\r"
            if not self._line_start_after_crlf:
                self.problems.add(Problem.BARE_LINE_ENDING)
            self._skipping = False
            chunk = chunk[newline + 1 :]
        data = self._carry + chunk if self._carry else chunk
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._hold(data)
            return None
        region = data[: last_newline + 1]
        if self._line_start_after_crlf and region.startswith(b".\r\n"):
            end = 0
        else:
            marker = region.find(b"\r\n.\r\n")
            end = marker + 2 if marker >= 0 else -1
        if end < 0:
            self._content(region)
            self._line_start_after_crlf = region.endswith(b"\r\n")
            self._hold(data[last_newline + 1 :])
            return None
        self._content(region[:end])
        self.done = True
        self._carry = b""
        return data[end + 3 :]

    def _hold(self, partial: bytes) -> None:
        if len(partial) >= MAX_TEXT_LINE:
            # The line is too long whatever follows: note it, keep nothing.
            self.problems.add(Problem.LINE_TOO_LONG)
            self._skipping = True
            self._skip_last_cr = partial.endswith(b"\r")
            self._carry = b""
            self.size += len(partial)
        else:
            self._carry = partial

    def _content(self, lines: bytes) -> None:
        """Complete lines (starting at a line start) that are message content."""
        if not lines:
            return
        # A CR or LF left once the CRLF pairs are gone stands alone.
        without_crlf = lines.replace(b"\r\n", b"")
        if b"\r" in without_crlf or b"\n" in without_crlf:
            self.problems.add(Problem.BARE_LINE_ENDING)
        if len(lines) > MAX_TEXT_LINE and _has_long_line(lines):
            self.problems.add(Problem.LINE_TOO_LONG)
        unstuffed = lines.replace(b"\r\n.", b"\r\n")
        if unstuffed.startswith(b"."):
            unstuffed = unstuffed[1:]
        self.size += len(unstuffed)
        if self.size > self._max_size:
            self.problems.add(Problem.TOO_BIG)
        if self.problems:
            self._parts.clear()  # the message will be rejected: hold nothing
        else:
            self._parts.append(unstuffed)

    def content(self) -> bytes:
        """The message, once ``done`` and without problems."""
        return b"".join(self._parts)
