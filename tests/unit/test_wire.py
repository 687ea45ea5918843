"""ReceiveBuffer: lines and exact reads, fed whole, byte by byte and in random chunks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.wire import LineTooLong, ReceiveBuffer


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def feed_and_collect(chunks: Iterable[bytes], max_line: int = 1000) -> list[bytes]:
    buf = ReceiveBuffer()
    lines = []
    for chunk in chunks:
        buf.feed(chunk)
        while (line := buf.next_line(max_line)) is not None:
            lines.append(line)
    return lines


WHOLE_OR_BYTES = pytest.mark.parametrize("size", [10_000, 1], ids=["whole", "byte-by-byte"])


@WHOLE_OR_BYTES
def test_lines_come_out_with_their_terminators(size: int) -> None:
    data = b"EHLO client.test\r\nMAIL FROM:<a@b>\r\nbare\nlast\r\n"
    assert feed_and_collect(chunks_of(data, size)) == [
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"bare\n",  # bare LF is the protocol's call, so it is passed through
        b"last\r\n",
    ]


@WHOLE_OR_BYTES
def test_incomplete_line_stays_buffered(size: int) -> None:
    buf = ReceiveBuffer()
    for chunk in chunks_of(b"NOOP", size):
        buf.feed(chunk)
        assert buf.next_line(100) is None
    assert len(buf) == 4
    buf.feed(b"\r\n")
    assert buf.next_line(100) == b"NOOP\r\n"
    assert len(buf) == 0


def test_line_of_exactly_the_limit_is_accepted() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"x" * 8 + b"\r\n")
    assert buf.next_line(10) == b"x" * 8 + b"\r\n"


def test_complete_line_over_the_limit_raises_and_can_be_discarded() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"x" * 9 + b"\r\nNEXT\r\n")
    with pytest.raises(LineTooLong):
        buf.next_line(10)
    buf.discard_line()
    assert buf.next_line(10) == b"NEXT\r\n"


def test_incomplete_line_raises_as_soon_as_it_is_too_long() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"x" * 9)
    assert buf.next_line(10) is None  # 9 bytes + LF would still fit
    buf.feed(b"x")
    # 10 bytes and no LF yet: the line cannot fit any more, whatever comes next.
    with pytest.raises(LineTooLong):
        buf.next_line(10)


@WHOLE_OR_BYTES
def test_discard_line_across_feeds(size: int) -> None:
    buf = ReceiveBuffer()
    buf.feed(b"A" * 50)
    with pytest.raises(LineTooLong):
        buf.next_line(20)
    buf.discard_line()
    assert len(buf) == 0
    # The rest of the long line arrives later and is dropped, not stored.
    lines = []
    for chunk in chunks_of(b"A" * 5000 + b"\r\nQUIT\r\n", size):
        buf.feed(chunk)
        assert len(buf) <= len(b"QUIT\r\n")
        while (line := buf.next_line(20)) is not None:
            lines.append(line)
    assert lines == [b"QUIT\r\n"]


def test_discard_then_line_in_the_same_chunk() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"B" * 30)
    with pytest.raises(LineTooLong):
        buf.next_line(20)
    buf.discard_line()
    buf.feed(b"BBB\r\nOK\r\nAL")
    assert buf.next_line(20) == b"OK\r\n"
    assert buf.next_line(20) is None
    buf.feed(b"SO\r\n")
    assert buf.next_line(20) == b"ALSO\r\n"


@WHOLE_OR_BYTES
def test_read_exact_between_lines(size: int) -> None:
    """An IMAP literal or BDAT chunk: a line, exactly N bytes, then lines again."""
    data = b"A1 APPEND INBOX {12}\r\nhello\r\nworld)\r\nA2 NOOP\r\n"
    buf = ReceiveBuffer()
    out: list[bytes] = []
    want_literal = False
    for chunk in chunks_of(data, size):
        buf.feed(chunk)
        while True:
            if want_literal:
                got = buf.read_exact(12)
                if got is None:
                    break
                out.append(got)
                want_literal = False
                continue
            line = buf.next_line(100)
            if line is None:
                break
            out.append(line)
            want_literal = line.endswith(b"{12}\r\n")
    assert out == [b"A1 APPEND INBOX {12}\r\n", b"hello\r\nworld", b")\r\n", b"A2 NOOP\r\n"]


def test_read_exact_waits_for_all_bytes() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"abc")
    assert buf.read_exact(4) is None
    assert len(buf) == 3
    buf.feed(b"de")
    assert buf.read_exact(4) == b"abcd"
    assert buf.read_exact(0) == b""
    assert buf.take_all() == b"e"


def test_read_exact_after_partial_line_scan() -> None:
    """A partial line scan must not make a later line search skip bytes."""
    buf = ReceiveBuffer()
    buf.feed(b"12345")
    assert buf.next_line(100) is None
    assert buf.read_exact(3) == b"123"
    buf.feed(b"\r\n")
    assert buf.next_line(100) == b"45\r\n"


def test_read_some_streams_a_large_literal() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"0123456789")
    assert buf.read_some(4) == b"0123"
    assert buf.read_some(100) == b"456789"
    assert buf.read_some(4) == b""


def test_take_all_catches_data_pipelined_before_starttls() -> None:
    # RFC 3207 4.2: bytes after STARTTLS but before the handshake are discarded.
    buf = ReceiveBuffer()
    buf.feed(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
    assert buf.next_line(100) == b"STARTTLS\r\n"
    assert buf.take_all() == b"MAIL FROM:<evil@x>\r\n"
    assert len(buf) == 0
    assert buf.next_line(100) is None


def test_eof() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"partial")
    assert not buf.eof
    buf.feed(b"")
    assert buf.eof
    assert buf.next_line(100) is None
    assert buf.take_all() == b"partial"


line_bodies = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20)


@given(bodies=line_bodies, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_random_chunking_gives_the_same_lines(bodies: list[bytes], cuts: list[int]) -> None:
    data = b"".join(body + b"\r\n" for body in bodies)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert feed_and_collect(chunks, max_line=100) == [body + b"\r\n" for body in bodies]


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=15),
    chunk=st.integers(min_value=1, max_value=70),
)
def test_random_long_lines_are_reported_and_skipped(lengths: list[int], chunk: int) -> None:
    """Every line over the limit raises exactly once and is skipped; the others
    come out intact, however the bytes are split."""
    limit = 32
    data = b"".join(bytes([65 + i % 26]) * n + b"\r\n" for i, n in enumerate(lengths))
    buf = ReceiveBuffer()
    out: list[bytes | None] = []
    for piece in chunks_of(data, chunk):
        buf.feed(piece)
        while True:
            try:
                line = buf.next_line(limit)
            except LineTooLong:
                buf.discard_line()
                out.append(None)
                continue
            if line is None:
                break
            out.append(line)
    expected = [
        None if n + 2 > limit else bytes([65 + i % 26]) * n + b"\r\n" for i, n in enumerate(lengths)
    ]
    assert out == expected
