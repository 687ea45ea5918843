"""Command framing: lines, synchronizing and non-synchronizing literals, limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap.framing import Continue, Frame, Framer, Refused


def events(framer: Framer, data: bytes, *, bytewise: bool) -> list[object]:
    out: list[object] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_event()) is not None:
            out.append(event)
    return out


def test_simple_line_whole_and_bytewise() -> None:
    for bytewise in (False, True):
        got = events(Framer(1000, 1000), b"a1 NOOP\r\nb2 CAPABILITY\r\n", bytewise=bytewise)
        assert got == [Frame((b"a1 NOOP",), ()), Frame((b"b2 CAPABILITY",), ())]


def test_sync_literal_asks_for_continuation() -> None:
    for bytewise in (False, True):
        data = b'a LOGIN {5}\r\nalice "pw"\r\n'
        got = events(Framer(1000, 1000), data, bytewise=bytewise)
        assert got == [Continue(), Frame((b"a LOGIN {5}", b' "pw"'), (b"alice",))]


def test_non_sync_literal_needs_no_continuation() -> None:
    got = events(Framer(1000, 1000), b"a APPEND INBOX {3+}\r\nabc\r\n", bytewise=True)
    assert got == [Frame((b"a APPEND INBOX {3}", b""), (b"abc",))]


def test_literal_containing_crlf_and_braces() -> None:
    got = events(Framer(1000, 1000), b"a X {9+}\r\n{2}\r\nab\r\n\r\n", bytewise=False)
    assert got == [Frame((b"a X {9}", b""), (b"{2}\r\nab\r\n",))]


def test_huge_sync_literal_refused_before_reading() -> None:
    framer = Framer(1000, 1 << 20)
    got = events(framer, b"a1 APPEND INBOX {4294967296}\r\na2 NOOP\r\n", bytewise=False)
    assert got == [
        Refused(b"a1", "TOOBIG", "Literal too large", fatal=False),
        Frame((b"a2 NOOP",), ()),
    ]


def test_huge_non_sync_literal_is_fatal() -> None:
    got = events(Framer(1000, 100), b"a1 APPEND INBOX {101+}\r\n", bytewise=False)
    assert got == [Refused(b"a1", "TOOBIG", "Literal too large", fatal=True)]


def test_literal_minus_limit_without_literal_plus() -> None:
    framer = Framer(1000, 10_000, literal_plus=False)
    got = events(framer, b"a X {4097+}\r\n", bytewise=False)
    assert isinstance(got[0], Refused) and got[0].fatal
    framer = Framer(1000, 10_000, literal_plus=False)
    assert events(framer, b"a X {4096+}\r\n" + b"x" * 4096 + b"\r\n", bytewise=False) == [
        Frame((b"a X {4096}", b""), (b"x" * 4096,))
    ]


def test_line_too_long_then_session_continues() -> None:
    framer = Framer(20, 100)
    got = events(framer, b"a1 " + b"x" * 50 + b"\r\na2 NOOP\r\n", bytewise=True)
    assert isinstance(got[0], Refused) and not got[0].fatal and got[0].code == ""
    assert got[-1] == Frame((b"a2 NOOP",), ())


def test_total_literal_bytes_bounded() -> None:
    framer = Framer(1000, 10)
    got = events(framer, b"a X {6+}\r\nabcdef {6}\r\n", bytewise=False)
    assert got == [Refused(b"a", "TOOBIG", "Literal too large", fatal=False)]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=7))
def test_any_bytes_only_frames_or_refusals(data: bytes, step: int) -> None:
    framer = Framer(64, 64)
    for i in range(0, len(data), step):
        framer.feed(data[i : i + step])
        while (event := framer.next_event()) is not None:
            assert isinstance(event, (Frame, Continue, Refused))
