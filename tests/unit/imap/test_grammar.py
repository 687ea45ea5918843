"""The command grammar: every command form, errors, and serializer round trips."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap import commands as c
from mailstack.imap import responses
from mailstack.imap.framing import Frame, Framer
from mailstack.imap.grammar import ParseError, Reader, TaggedParseError, astring, command, nstring
from mailstack.imap.sequence import STAR, SequenceSet


def parse(line: bytes, *literals: bytes) -> c.Tagged:
    framer = Framer(100_000, 100_000)
    framer.feed(line)
    frames = []
    while (event := framer.next_event()) is not None:
        if isinstance(event, Frame):
            frames.append(event)
    assert len(frames) == 1, frames
    return command(frames[0])


def cmd(line: str) -> c.Command:
    return parse(line.encode() + b"\r\n").command


def test_simple_commands() -> None:
    assert cmd("a CAPABILITY") == c.Capability()
    assert cmd("a noop") == c.Noop()
    assert cmd("a LOGOUT") == c.Logout()
    assert cmd("a STARTTLS") == c.StartTls()
    assert cmd("a IDLE") == c.Idle()
    assert cmd("a NAMESPACE") == c.Namespace()
    assert cmd("a CHECK") == c.Check()
    assert cmd("a CLOSE") == c.Close()
    assert cmd("a UNSELECT") == c.Unselect()
    assert cmd("a EXPUNGE") == c.Expunge()
    assert cmd("a UID EXPUNGE 1:3") == c.Expunge(SequenceSet(((1, 3),)))


def test_login_forms() -> None:
    assert cmd('a LOGIN alice "p w\\"x"') == c.Login("alice", 'p w"x')
    tagged = parse(b"a LOGIN {5}\r\nalice {3}\r\np w\r\n")
    assert tagged.command == c.Login("alice", "p w")


def test_authenticate_with_initial_response() -> None:
    assert cmd("a AUTHENTICATE PLAIN AGEAYg==") == c.Authenticate("PLAIN", "AGEAYg==")
    assert cmd("a AUTHENTICATE plain =") == c.Authenticate("PLAIN", "=")
    assert cmd("a AUTHENTICATE LOGIN") == c.Authenticate("LOGIN", None)


def test_mailbox_commands() -> None:
    assert cmd("a SELECT inbox") == c.Select("INBOX", readonly=False)
    assert cmd('a EXAMINE "Sent Items"') == c.Select("Sent Items", readonly=True)
    assert cmd("a CREATE Stuff (USE (\\Archive))") == c.Create("Stuff", "\\Archive")
    assert cmd("a DELETE x") == c.Delete("x")
    assert cmd("a RENAME INBOX Old") == c.Rename("INBOX", "Old")
    assert cmd("a SUBSCRIBE x") == c.Subscribe("x", True)
    assert cmd("a UNSUBSCRIBE x") == c.Subscribe("x", False)
    assert cmd("a STATUS INBOX (MESSAGES UNSEEN SIZE)") == c.Status(
        "INBOX", ("MESSAGES", "UNSEEN", "SIZE")
    )
    assert cmd('a LSUB "" %') == c.ListCmd("", ("%",), lsub=True)
    assert cmd('a LIST (SPECIAL-USE) "" * RETURN (SUBSCRIBED)') == c.ListCmd(
        "", ("*",), ("SPECIAL-USE",), ("SUBSCRIBED",)
    )


def test_append() -> None:
    tagged = parse(b'a APPEND Drafts (\\Seen $Label) "05-Jan-2024 08:09:10 -0130" {4}\r\nbody\r\n')
    assert isinstance(tagged.command, c.Append)
    assert tagged.command.flags == ("\\Seen", "$Label")
    assert tagged.command.date == datetime(
        2024, 1, 5, 8, 9, 10, tzinfo=timezone(-timedelta(hours=1, minutes=30))
    )
    assert tagged.command.message == b"body"
    assert parse(b"a APPEND x {2+}\r\nhi\r\n").command == c.Append("x", (), None, b"hi")
    # RFC 6855 4 (UTF8=ACCEPT) and literal8 (RFC 3516).
    utf8 = parse("a APPEND x UTF8 (~{4+}\r\nçé)\r\n".encode())
    assert utf8.command == c.Append("x", (), None, "çé".encode())
    assert parse(b"a APPEND x ~{2}\r\n\0\1\r\n").command == c.Append("x", (), None, b"\0\1")


def test_fetch_items() -> None:
    f = cmd("a FETCH 2:4,* (FLAGS BODY[] BODY.PEEK[1.2.MIME] BINARY[1]<5.10> RFC822.SIZE)")
    assert isinstance(f, c.Fetch)
    assert f.sequence == SequenceSet(((2, 4), (STAR, STAR)))
    assert f.items == (
        c.FetchAtt("FLAGS"),
        c.FetchAtt("BODY", c.Section()),
        c.FetchAtt("BODY.PEEK", c.Section((1, 2), "MIME")),
        c.FetchAtt("BINARY", c.Section((1,)), (5, 10)),
        c.FetchAtt("RFC822.SIZE"),
    )
    full = cmd("a FETCH 1 FULL")
    assert isinstance(full, c.Fetch) and [i.name for i in full.items][-1] == "BODY"
    h = cmd("a UID FETCH 1:* BODY.PEEK[HEADER.FIELDS.NOT (Received DKIM-Signature)]")
    assert isinstance(h, c.Fetch) and h.uid
    assert h.items[0].section == c.Section((), "HEADER.FIELDS.NOT", ("RECEIVED", "DKIM-SIGNATURE"))


def test_store_and_copy() -> None:
    assert cmd("a STORE 1 +FLAGS.SILENT (\\Seen)") == c.Store(
        False, SequenceSet(((1, 1),)), "add", True, ("\\Seen",)
    )
    assert cmd("a UID STORE 5 -FLAGS \\deleted foo") == c.Store(
        True, SequenceSet(((5, 5),)), "remove", False, ("\\Deleted", "foo")
    )
    assert cmd("a UID MOVE $ Trash") == c.Copy(True, SequenceSet((), saved=True), "Trash", True)
    assert cmd("a COPY 1:2 Archive") == c.Copy(False, SequenceSet(((1, 2),)), "Archive", False)


def test_search_keys_nesting() -> None:
    s = cmd('a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 NOT (OR SEEN FLAGGED) HEADER X-A "b"')
    assert s == c.Search(
        False,
        c.SearchKey(
            "AND",
            (
                c.SearchKey(
                    "NOT",
                    (
                        c.SearchKey(
                            "AND",
                            (c.SearchKey("OR", (c.SearchKey("SEEN"), c.SearchKey("FLAGGED"))),),
                        ),
                    ),
                ),
                c.SearchKey("HEADER", ("X-A", "b")),
            ),
        ),
        "UTF-8",
        ("MIN", "COUNT"),
    )
    every = (
        "ALL ANSWERED BCC x BEFORE 1-Feb-2020 BODY y CC z DELETED DRAFT FLAGGED FROM f "
        "KEYWORD k LARGER 5 NEW OLD ON 1-Jan-2020 RECENT SEEN SENTBEFORE 1-Jan-2020 "
        "SENTON 1-Jan-2020 SENTSINCE 1-Jan-2020 SINCE 1-Jan-2020 SMALLER 9 SUBJECT s "
        "TEXT t TO u UID 1:* UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD k UNSEEN "
        "1,2 YOUNGER 60 OLDER 60"
    )
    s = cmd("a UID SEARCH " + every)
    assert isinstance(s, c.Search) and s.uid and len(s.key.args) == 35


def test_search_literal_utf8() -> None:
    tagged = parse("a SEARCH CHARSET UTF-8 BODY {5}\r\ncafé\r\n".encode())
    assert tagged.command == c.Search(False, c.SearchKey("BODY", ("café",)), "UTF-8")


def test_nesting_depth_limited() -> None:
    line = b"a SEARCH " + b"(" * 40 + b"ALL" + b")" * 40 + b"\r\n"
    with pytest.raises(TaggedParseError):
        parse(line)


@pytest.mark.parametrize(
    "line",
    [
        "a FOO",
        "a FETCH",
        "a FETCH 0 FLAGS",
        "a FETCH 1 (FLAGS",
        "a FETCH 1 BODY[2.HEADERX]",
        "a FETCH 1 BODY[1.]",
        "a FETCH 1 BODY[MIME]",
        "a STORE 1 FLAGS (\\Seen",
        'a LOGIN "unterminated',
        "a SEARCH BEFORE 32-Jan-2020",
        "a SEARCH NOSUCHKEY",
        "a SELECT",
        "a NOOP extra",
        "a UID NOOP",
        "a APPEND x (\\Seen)",
    ],
)
def test_syntax_errors_keep_the_tag(line: str) -> None:
    with pytest.raises(TaggedParseError) as info:
        cmd(line)
    assert info.value.tag == "a"


def test_missing_tag_is_untagged_error() -> None:
    with pytest.raises(ParseError):
        command(Frame((b"",), ()))


def _reader_for(wire: bytes) -> Reader:
    framer = Framer(100_000, 100_000)
    framer.feed(wire + b"\r\n")
    event = None
    while True:
        nxt = framer.next_event()
        if nxt is None:
            break
        event = nxt
    assert isinstance(event, Frame)
    return Reader(event)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_string_round_trip(value: str) -> None:
    for utf8 in (False, True):
        wire = responses.string(value, utf8=utf8)
        assert nstring(_reader_for(wire)) == value
        awire = responses.astring(value, utf8=utf8)
        if value:
            assert astring(_reader_for(awire)) == value


def test_nil_and_atom_choices() -> None:
    assert responses.string(None) == b"NIL"
    assert responses.astring("NIL") == b'"NIL"'
    assert responses.astring("INBOX") == b"INBOX"
    assert responses.astring("a b") == b'"a b"'
    assert responses.string("x\r\ny") == b"{4}\r\nx\r\ny"
    assert responses.string("é") == b"{2}\r\n\xc3\xa9"
    assert responses.string("é", utf8=True) == '"é"'.encode()
    assert responses.sexp([1, None, "a", ["b"]]) == b'(1 NIL "a" ("b"))'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_command_bytes_give_only_parse_errors(data: bytes) -> None:
    framer = Framer(1000, 1000)
    framer.feed(data + b"\r\n")
    while (event := framer.next_event()) is not None:
        if isinstance(event, Frame):
            try:
                command(event)
            except ParseError:
                pass


_tokens = st.sampled_from(
    [
        "a",
        " ",
        "FETCH",
        "SEARCH",
        "UID",
        "1:*",
        "(",
        ")",
        "[",
        "]",
        '"',
        "{3}",
        "\\",
        "OR",
        "NOT",
        "BODY",
        "<0.5>",
        "HEADER",
        ".",
        "*",
        "$",
        "APPEND",
        "LIST",
        "STORE",
        "+FLAGS",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_tokens, max_size=25))
def test_command_shaped_input_gives_only_parse_errors(tokens: list[str]) -> None:
    framer = Framer(1000, 1000)
    framer.feed("".join(tokens).encode() + b"\r\nabc\r\n")
    while (event := framer.next_event()) is not None:
        if isinstance(event, Frame):
            try:
                command(event)
            except ParseError:
                pass
