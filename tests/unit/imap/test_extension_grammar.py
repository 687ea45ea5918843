"""Grammar of SORT/ESORT, THREAD, QUOTA, COMPRESS and MULTIAPPEND, and the
DEFLATE stream of COMPRESS (RFC 4978) over an in-memory stream pair."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from mailstack.imap import commands as c
from mailstack.imap.compress import MAX_INFLATE, DeflateStream
from mailstack.imap.framing import Frame, Framer
from mailstack.imap.grammar import TaggedParseError, command

ALL = c.SearchKey("ALL")
SINCE = datetime(1994, 2, 1, tzinfo=UTC)


def parse(data: bytes) -> c.Command:
    framer = Framer(65536, 1 << 20)
    framer.feed(data)
    while (event := framer.next_event()) is not None:
        if isinstance(event, Frame):
            return command(event).command
    raise AssertionError("no complete command")


def test_sort() -> None:
    assert parse(b"a SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n") == c.Sort(
        False, (("SUBJECT", False), ("DATE", True)), ALL, "UTF-8"
    )
    assert parse(b"a UID SORT (DISPLAYFROM) us-ascii SINCE 1-Feb-1994 SEEN\r\n") == c.Sort(
        True,
        (("DISPLAYFROM", False),),
        c.SearchKey("AND", (c.SearchKey("SINCE", (SINCE,)), c.SearchKey("SEEN"))),
        "US-ASCII",
    )
    # RFC 5267 ESORT: RETURN options, empty meaning ALL.
    assert parse(b"a SORT RETURN (MIN COUNT) (ARRIVAL) UTF-8 ALL\r\n") == c.Sort(
        False, (("ARRIVAL", False),), ALL, "UTF-8", ("MIN", "COUNT")
    )
    assert parse(b"a SORT RETURN () (SIZE) UTF-8 ALL\r\n") == c.Sort(
        False, (("SIZE", False),), ALL, "UTF-8", ("ALL",)
    )


@pytest.mark.parametrize(
    "line",
    [
        b"a SORT (NOSUCH) UTF-8 ALL\r\n",
        b"a SORT () UTF-8 ALL\r\n",
        b"a SORT (DATE) ALL\r\n",  # the charset is required
        b"a SORT (REVERSE) UTF-8 ALL\r\n",
        b"a THREAD REFERENCES\r\n",
        b"a COMPRESS\r\n",
        b'a SETQUOTA "" (STORAGE x)\r\n',
    ],
)
def test_bad_extension_commands(line: bytes) -> None:
    with pytest.raises(TaggedParseError):
        parse(line)


def test_thread_quota_compress() -> None:
    threads = parse(b"a THREAD references UTF-8 ALL\r\n")
    assert threads == c.Thread(False, "REFERENCES", ALL, "UTF-8")
    assert parse(b"a UID THREAD ORDEREDSUBJECT UTF-8 ALL\r\n") == c.Thread(
        True, "ORDEREDSUBJECT", ALL, "UTF-8"
    )
    assert parse(b'a GETQUOTA ""\r\n') == c.GetQuota("")
    assert parse(b"a GETQUOTAROOT inbox\r\n") == c.GetQuotaRoot("INBOX")
    assert parse(b'a SETQUOTA "" (STORAGE 512 MESSAGE 10)\r\n') == c.SetQuota(
        "", (("STORAGE", 512), ("MESSAGE", 10))
    )
    assert parse(b"a COMPRESS deflate\r\n") == c.Compress("DEFLATE")


def test_multiappend() -> None:
    data = (
        b'a APPEND INBOX (\\Seen) {3+}\r\none "01-Feb-2024 10:00:00 +0000" {3+}\r\ntwo'
        b" ~{3+}\r\nt\x00o UTF8 (~{4+}\r\nfour)\r\n"
    )
    append = parse(data)
    assert isinstance(append, c.Append)
    assert (append.flags, append.message) == (("\\Seen",), b"one")
    assert [m.message for m in append.more] == [b"two", b"t\x00o", b"four"]
    assert append.more[0].date is not None and append.more[1].flags == ()


async def test_deflate_stream_both_ways() -> None:
    client, server = trio.testing.memory_stream_pair()
    wrapped = DeflateStream(server)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    await client.send_all(deflate.compress(b"a NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    assert await wrapped.receive_some() == b"a NOOP\r\n"
    await wrapped.send_all(b"a OK done\r\n")
    inflate = zlib.decompressobj(-15)
    assert inflate.decompress(await client.receive_some()) == b"a OK done\r\n"


async def test_deflate_stream_bounds_inflation_and_rejects_garbage() -> None:
    client, server = trio.testing.memory_stream_pair()
    wrapped = DeflateStream(server)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflate.compress(b"\0" * (10 * MAX_INFLATE)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 20_000
    await client.send_all(bomb)
    received = 0
    while received < 10 * MAX_INFLATE:
        chunk = await wrapped.receive_some()
        assert 0 < len(chunk) <= MAX_INFLATE
        received += len(chunk)
    await client.send_all(b"\xff\xff\xff\xff not deflate")
    with pytest.raises(trio.BrokenResourceError):
        await wrapped.receive_some()
    await client.aclose()
    assert await DeflateStream(server).receive_some() == b""
