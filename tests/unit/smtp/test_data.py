from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.smtp.data import MAX_TEXT_LINE, DataDecoder, Problem


def decode(
    data: bytes, *, bytewise: bool, max_size: int = 100_000
) -> tuple[DataDecoder, bytes | None]:
    decoder = DataDecoder(max_size)
    if not bytewise:
        return decoder, decoder.feed(data)
    for index in range(len(data)):
        rest = decoder.feed(data[index : index + 1])
        if rest is not None:
            return decoder, rest + data[index + 1 :]
    return decoder, None


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_empty_message(bytewise: bool) -> None:
    decoder, rest = decode(b".\r\n", bytewise=bytewise)
    assert rest == b"" and decoder.content() == b"" and not decoder.problems


def test_dot_unstuffing_and_pipelined_rest(bytewise: bool) -> None:
    data = b"..leading\r\nmid\r\n...two\r\n.\r\nQUIT\r\n"
    decoder, rest = decode(data, bytewise=bytewise)
    assert decoder.content() == b".leading\r\nmid\r\n..two\r\n"
    assert rest == b"QUIT\r\n"
    assert decoder.size == len(decoder.content())


def test_not_finished_without_marker(bytewise: bool) -> None:
    decoder, rest = decode(b"line\r\n.x\r\n", bytewise=bytewise)
    assert rest is None and not decoder.done


# The 2023 SMTP smuggling vectors: none of them ends the data; every one marks
# the message as carrying a bare line ending, so it is refused as a whole and
# the "second message" stays message text.
SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\r.\r",
    b"\n.\r",
]


@pytest.mark.parametrize("vector", SMUGGLING, ids=repr)
def test_smuggling_vectors_do_not_end_data(vector: bytes, bytewise: bool) -> None:
    smuggled = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.test>\r\nDATA\r\nforged\r\n"
    data = b"Subject: hi\r\n\r\nbody" + vector + smuggled + b".\r\nNOOP\r\n"
    decoder, rest = decode(data, bytewise=bytewise)
    assert rest == b"NOOP\r\n"
    assert Problem.BARE_LINE_ENDING in decoder.problems
    assert decoder.content() == b""


@pytest.mark.parametrize("vector", SMUGGLING, ids=repr)
def test_smuggling_vector_directly_before_end(vector: bytes, bytewise: bool) -> None:
    data = b"x" + vector + b"\r\n.\r\n"
    decoder, rest = decode(data, bytewise=bytewise)
    assert rest == b""
    assert Problem.BARE_LINE_ENDING in decoder.problems


def test_long_line_is_noted_and_not_kept(bytewise: bool) -> None:
    data = b"ok\r\n" + b"x" * (MAX_TEXT_LINE * 3) + b"\r\nafter\r\n.\r\nNOOP\r\n"
    decoder, rest = decode(data, bytewise=bytewise)
    assert rest == b"NOOP\r\n"
    assert decoder.problems == {Problem.LINE_TOO_LONG}
    assert decoder.content() == b""


def test_line_of_exactly_1000_octets_is_fine(bytewise: bool) -> None:
    line = b"y" * (MAX_TEXT_LINE - 2) + b"\r\n"
    decoder, rest = decode(line + b".\r\n", bytewise=bytewise)
    assert rest == b"" and not decoder.problems and decoder.content() == line


def test_line_of_1001_octets_is_too_long(bytewise: bool) -> None:
    line = b"y" * (MAX_TEXT_LINE - 1) + b"\r\n"
    decoder, _ = decode(line + b".\r\n", bytewise=bytewise)
    assert decoder.problems == {Problem.LINE_TOO_LONG}


def test_size_cap_discards_without_buffering() -> None:
    decoder = DataDecoder(1000)
    line = b"z" * 98 + b"\r\n"
    for _ in range(1000):
        assert decoder.feed(line) is None
    assert decoder.problems == {Problem.TOO_BIG}
    assert decoder._parts == []  # nothing held for a refused message
    assert decoder.feed(b".\r\nQUIT\r\n") == b"QUIT\r\n"
    assert decoder.size == 100_000


def test_bare_cr_in_long_line_still_ends_only_at_crlf_dot_crlf() -> None:
    data = b"a" * 2000 + b"\n.\r\nstill data\r\n.\r\n"
    decoder, rest = decode(data, bytewise=False)
    assert rest == b""
    assert Problem.BARE_LINE_ENDING in decoder.problems


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2100), min_size=1, max_size=8))
def test_long_line_detection_matches_a_plain_split(lengths: list[int]) -> None:
    data = b"".join(b"x" * n + b"\r\n" for n in lengths)
    decoder, rest = decode(data + b".\r\n", bytewise=False)
    assert rest == b""
    too_long = max(lengths) + 2 > MAX_TEXT_LINE
    assert (Problem.LINE_TOO_LONG in decoder.problems) == too_long
