"""PURE IMAP pieces: sequence sets, modified UTF-7, the mailbox view, SEARCH,
session rules, BODY[section] extraction and ENVELOPE/BODYSTRUCTURE output."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack import mime
from mailstack.imap import bodystructure, mutf7, responses
from mailstack.imap import commands as c
from mailstack.imap.mailbox_view import MailboxView, UidMap
from mailstack.imap.mutf7 import Mutf7Error
from mailstack.imap.protocol import (
    ALLOWED_STATES,
    SessionState,
    Settings,
    State,
    list_matches,
    valid_mailbox_name,
)
from mailstack.imap.search import Candidate, Scope, matches, needs_content
from mailstack.imap.sequence import STAR, SequenceSet, from_numbers
from mailstack.store.records import MessageRecord

# -- sequence sets ------------------------------------------------------------


def test_sequence_numbers_and_uids() -> None:
    s = SequenceSet(((2, 4), (STAR, STAR)))
    assert s.sequence_numbers(6) == [2, 3, 4, 6]
    assert s.sequence_numbers(3) is None  # 4 is beyond the mailbox
    assert SequenceSet(((STAR, 2),)).sequence_numbers(5) == [2, 3, 4, 5]
    assert SequenceSet(((5, STAR),)).select_uids([1, 3, 9]) == [9]
    assert SequenceSet(((100, STAR),)).select_uids([1, 3, 9]) == [9]  # "*" is 9: 9:100
    assert SequenceSet(((4, 8),)).select_uids([1, 3, 9]) == []
    assert str(s) == "2:4,*"
    assert from_numbers([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"


# -- modified UTF-7 -------------------------------------------------------------


def test_mutf7_rfc_examples() -> None:
    assert mutf7.encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert mutf7.decode("Entw&APw-rfe") == "Entwürfe"
    assert mutf7.encode("a&b") == "a&-b"
    for bad in ("&Jjo!", "&U,BTFw", "&AGE-", "é"):
        with pytest.raises(Mutf7Error):
            mutf7.decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_mutf7_round_trip(name: str) -> None:
    assert mutf7.decode(mutf7.encode(name)) == name


# -- the mailbox view (RFC 9051 7.4.1) --------------------------------------------


def test_view_defers_expunge_until_allowed() -> None:
    view = MailboxView(1, [10, 11, 12])
    view.message_expunged(11)
    view.message_added(13)
    view.flags_changed(12, frozenset({"\\Flagged"}))
    out = view.flush(expunges_allowed=False)
    assert out == [b"* 3 FETCH (UID 12 FLAGS (\\Flagged))\r\n", b"* 4 EXISTS\r\n"]
    assert view.uids.to_list() == [10, 11, 12, 13]  # 11 still has number 2
    out = view.flush(expunges_allowed=True)
    assert out == [b"* 2 EXPUNGE\r\n"]
    assert view.uids.to_list() == [10, 12, 13] and view.seq_of(13) == 3


def test_view_expunge_order_and_own_changes() -> None:
    view = MailboxView(1, [1, 2, 3, 4])
    assert view.remove_now([2, 4]) == [4, 2]  # highest first: numbers stay valid
    view.message_expunged(2)  # our own expunge echoed by the store: ignored
    view.own_flags(1, frozenset({"\\Seen"}))
    view.flags_changed(1, frozenset({"\\Seen"}))  # echo of our STORE: nothing to send
    assert view.flush(expunges_allowed=True) == []
    view.flags_changed(1, frozenset())  # someone else's change is reported
    assert view.flush(expunges_allowed=True) == [b"* 1 FETCH (UID 1 FLAGS ())\r\n"]
    view.message_added(5)
    view.message_expunged(5)  # came and went before being announced
    assert view.flush(expunges_allowed=True) == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=60), unique=True).map(sorted),
    st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=80)), max_size=30),
)
def test_uid_map_matches_a_sorted_list(initial: list[int], ops: list[tuple[bool, int]]) -> None:
    uid_map = UidMap(initial)
    model = list(initial)
    for add, uid in ops:
        if add:
            uid_map.add(uid)
            if uid not in model:
                model.append(uid)
                model.sort()
        else:
            uid_map.remove(uid)
            if uid in model:
                model.remove(uid)
        assert uid_map.to_list() == model
        assert len(uid_map) == len(model)
        assert uid_map.max == (model[-1] if model else 0)
        for seq, u in enumerate(model, start=1):
            assert uid_map.seq_of(u) == seq and uid_map.uid_of(seq) == u
        assert uid_map.seq_of(1000) is None


# -- SEARCH ------------------------------------------------------------------------

RAW = (
    b"From: =?utf-8?q?Ren=C3=A9?= <rene@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Mon, 2 Mar 2026 09:00:00 +0100\r\n"
    b"X-Tag: blue\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"w6l0w6kgY2hhdWQ=\r\n"
)


def record(uid: int = 7, size: int = 500, flags: frozenset[str] = frozenset()) -> MessageRecord:
    analysis = mime.analyze(RAW)
    return MessageRecord(
        id=1,
        mailbox_id=1,
        uid=uid,
        modseq=3,
        flags=flags,
        internal_date=datetime(2026, 3, 3, 12, 0, tzinfo=UTC),
        size=size,
        content_id=1,
        envelope=analysis.envelope,
        bodystructure=analysis.bodystructure,
        headers=analysis.headers,
    )


def key(text: str) -> c.SearchKey:
    from mailstack.imap.framing import Frame
    from mailstack.imap.grammar import command

    tagged = command(Frame((b"a SEARCH " + text.encode("utf-8"),), ()))
    assert isinstance(tagged.command, c.Search)
    return tagged.command.key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ALL", True),
        ("FROM rené", True),
        ("FROM RENE@EXAMPLE", True),
        ("FROM bob", False),
        ("SUBJECT quarterly", True),
        ('BODY "été chaud"', True),
        ("BODY report", False),
        ("TEXT report", True),
        ("HEADER X-Tag BLUE", True),
        ('HEADER X-Tag ""', True),
        ('HEADER X-Missing ""', False),
        ("FLAGGED", True),
        ("UNFLAGGED", False),
        ("SEEN", False),
        ("UNSEEN", True),
        ("KEYWORD $work", True),
        ("UNKEYWORD $work", False),
        ("LARGER 499", True),
        ("SMALLER 500", False),
        ("ON 3-Mar-2026", True),
        ("BEFORE 3-Mar-2026", False),
        ("SINCE 3-Mar-2026", True),
        ("SENTON 2-Mar-2026", True),
        ("SENTBEFORE 2-Mar-2026", False),
        ("SENTSINCE 1-Mar-2026", True),
        ("UID 7", True),
        ("UID 1:6", False),
        ("UID *", False),
        ("2", True),
        ("*", False),
        ("OR SEEN FLAGGED", True),
        ("NOT (FLAGGED LARGER 1)", False),
        ("NEW", False),
        ("OLD", True),
        ("RECENT", False),
        ("OLDER 3600", True),
        ("YOUNGER 3600", False),
    ],
)
def test_search_keys(text: str, expected: bool) -> None:
    flags = frozenset({"\\Flagged", "$Work"})
    candidate = Candidate(2, record(flags=flags), flags, raw=RAW)
    scope = Scope(3, 9, datetime(2026, 3, 5, tzinfo=UTC))
    assert matches(key(text), candidate, scope) is expected


def test_needs_content_only_for_body_keys() -> None:
    assert needs_content(key("OR SEEN (NOT BODY x)"))
    assert needs_content(key("HEADER a b"))
    assert not needs_content(key("OR SEEN FROM x"))


# -- session rules ------------------------------------------------------------------


def session(state: State, tls: bool = True, plain: bool = False) -> SessionState:
    s = SessionState(Settings(1000, plain, True), tls_active=tls)
    s.state = state
    return s


EXAMPLES: list[c.Command] = [
    c.Capability(),
    c.Noop(),
    c.Logout(),
    c.Id(None),
    c.StartTls(),
    c.Authenticate("PLAIN", None),
    c.Login("a", "b"),
    c.Enable(("IMAP4REV2",)),
    c.Select("INBOX", False),
    c.Create("x"),
    c.Delete("x"),
    c.Rename("a", "b"),
    c.Subscribe("x", True),
    c.ListCmd("", ("*",)),
    c.Namespace(),
    c.Status("x", ()),
    c.Append("x", (), None, b""),
    c.Idle(),
    c.Check(),
    c.Close(),
    c.Unselect(),
    c.Expunge(),
    c.Search(False, c.SearchKey("ALL")),
    c.Fetch(False, SequenceSet(((1, 1),)), ()),
    c.Store(False, SequenceSet(((1, 1),)), "add", False, ()),
    c.Copy(False, SequenceSet(((1, 1),)), "x", False),
    c.Sort(False, (("DATE", False),), c.SearchKey("ALL"), "UTF-8"),
    c.Thread(False, "REFERENCES", c.SearchKey("ALL"), "UTF-8"),
    c.GetQuota(""),
    c.GetQuotaRoot("INBOX"),
    c.SetQuota("", ()),
    c.Compress("DEFLATE"),
]


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("command", EXAMPLES, ids=lambda cmd: type(cmd).__name__)
def test_every_command_in_every_state(state: State, command: c.Command) -> None:
    problem = session(state).check_state(command)
    assert (problem is None) == (state in ALLOWED_STATES[type(command)])
    if (
        state is State.AUTHENTICATED
        and problem is not None
        and State.SELECTED in ALLOWED_STATES[type(command)]
    ):
        assert problem == "No mailbox selected"


def test_every_command_class_has_rules() -> None:
    assert {type(cmd) for cmd in EXAMPLES} == set(ALLOWED_STATES)


def test_capabilities_follow_tls_and_state() -> None:
    plain = session(State.NOT_AUTHENTICATED, tls=False)
    assert "LOGINDISABLED" in plain.capabilities() and "STARTTLS" in plain.capabilities()
    assert "AUTH=PLAIN" not in plain.capabilities()
    secure = session(State.NOT_AUTHENTICATED, tls=True)
    assert "AUTH=PLAIN" in secure.capabilities() and "STARTTLS" not in secure.capabilities()
    allowed = session(State.NOT_AUTHENTICATED, tls=False, plain=True)
    assert "LOGINDISABLED" not in allowed.capabilities()
    authed = session(State.AUTHENTICATED).capabilities()
    assert "APPENDLIMIT=1000" in authed and "MOVE" in authed and "IDLE" in authed


def test_names_encoded_per_enabled_capability() -> None:
    s = session(State.AUTHENTICATED)
    assert s.encode_name("Entwürfe") == "Entw&APw-rfe"
    assert s.decode_name("inbox") == "INBOX"
    s.enabled.add("UTF8=ACCEPT")
    assert s.encode_name("Entwürfe") == "Entwürfe"


def test_list_patterns() -> None:
    assert list_matches("*", "a/b/c")
    assert list_matches("%", "a") and not list_matches("%", "a/b")
    assert list_matches("a/%", "a/b") and not list_matches("a/%", "a/b/c")
    assert list_matches("inbox", "INBOX") and list_matches("Inbox/%", "INBOX/x")
    assert not list_matches("x.y", "xzy")
    assert valid_mailbox_name("a/b") and not valid_mailbox_name("a//b")
    assert not valid_mailbox_name("a*") and not valid_mailbox_name("/a")


# -- BODY[section] -----------------------------------------------------------------

NESTED = (
    b"Subject: outer\r\n"
    b"Content-Type: multipart/mixed; boundary=o\r\n\r\n"
    b"--o\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
    b"Subject: inner\r\nX-A: 1\r\n  folded\r\n"
    b"Content-Type: multipart/alternative; boundary=i\r\n\r\n"
    b"--i\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n"
    b"--i\r\nContent-Type: text/html\r\n\r\n<b>inner</b>\r\n--i--\r\n"
    b"--o--\r\n"
)


def section(text: str) -> c.Section:
    from mailstack.imap.framing import Frame
    from mailstack.imap.grammar import Reader
    from mailstack.imap.grammar import section as parse_section

    return parse_section(Reader(Frame(((f"[{text}]").encode(),), ())))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1", b"first"),
        ("1.MIME", b"Content-Type: text/plain\r\n\r\n"),
        ("2.HEADER.FIELDS (SUBJECT X-A)", b"Subject: inner\r\nX-A: 1\r\n  folded\r\n\r\n"),
        ("2.HEADER.FIELDS.NOT (X-A Content-Type)", b"Subject: inner\r\n\r\n"),
        ("2.1", b"inner plain"),
        ("2.2", b"<b>inner</b>"),
        ("2.2.MIME", b"Content-Type: text/html\r\n\r\n"),
        ("HEADER.FIELDS (subject)", b"Subject: outer\r\n\r\n"),
        ("3", None),
        ("1.HEADER", None),
        ("1.1", b"first"),
    ],
)
def test_sections(spec: str, expected: bytes | None) -> None:
    tree = mime.parse_tree(NESTED)
    assert bodystructure.extract(NESTED, tree, section(spec)) == expected


def test_whole_header_text_and_binary() -> None:
    tree = mime.parse_tree(NESTED)
    header = bodystructure.extract(NESTED, tree, section("HEADER"))
    text = bodystructure.extract(NESTED, tree, section("TEXT"))
    assert header is not None and text is not None and header + text == NESTED
    assert bodystructure.extract(NESTED, tree, section("")) == NESTED
    b64 = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"
    assert bodystructure.binary(b64, mime.parse_tree(b64), section("1")) == b"hi"


def test_bodystructure_rendering_nested_message() -> None:
    bs = mime.analyze(NESTED).bodystructure
    out = responses.bodystructure(bs, extensible=False)
    assert out.startswith(b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 5 1)("message"')
    assert out.endswith(b' "mixed")')
    assert b'"alternative") 14)' in out  # encapsulated body, then its line count


def test_date_time_rendering() -> None:
    when = datetime(2026, 3, 3, 7, 5, 9, tzinfo=UTC)
    assert responses.date_time(when) == b'" 3-Mar-2026 07:05:09 +0000"'
