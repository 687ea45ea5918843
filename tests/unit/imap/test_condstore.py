"""CONDSTORE / QRESYNC (RFC 7162): the grammar of the new parameters and
modifiers, the PURE rules in modseq.py (including section 3.2.5.2's
sequence match data), and the mailbox view's VANISHED / MODSEQ output."""

from __future__ import annotations

import pytest

from mailstack.imap import commands as c
from mailstack.imap import modseq
from mailstack.imap.framing import Frame, Framer
from mailstack.imap.grammar import TaggedParseError, command
from mailstack.imap.mailbox_view import MailboxView
from mailstack.imap.protocol import SessionState, Settings, State
from mailstack.imap.sequence import STAR, SequenceSet


def cmd(line: str) -> c.Command:
    framer = Framer(100_000, 100_000)
    framer.feed(line.encode() + b"\r\n")
    event = framer.next_event()
    assert isinstance(event, Frame)
    return command(event).command


def seqs(*ranges: tuple[int, int]) -> SequenceSet:
    return SequenceSet(tuple(ranges))


# -- grammar (RFC 7162 7) --------------------------------------------------------


def test_select_parameters() -> None:
    assert cmd("a SELECT INBOX (CONDSTORE)") == c.Select("INBOX", False, condstore=True)
    assert cmd("a EXAMINE x (QRESYNC (67890007 20050715194045000))") == c.Select(
        "x", True, qresync=c.Qresync(67890007, 20050715194045000)
    )
    full = cmd("a SELECT INBOX (QRESYNC (67890007 90060115194045000 41,43:211,214:541))")
    assert isinstance(full, c.Select) and full.qresync is not None
    assert full.qresync.known_uids == seqs((41, 41), (43, 211), (214, 541))
    assert full.qresync.seq_match is None
    # RFC 7162 3.2.5.2 example: known-uids and sequence match data.
    both = cmd(
        "a SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 "
        "(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982,29985,"
        "29988,29991,29994,29997)))"
    )
    assert isinstance(both, c.Select) and both.qresync is not None
    assert both.qresync.seq_match is not None
    assert both.qresync.seq_match[0] == seqs((5000, 5000), (7500, 7500), (9000, 9000), (9990, 9999))
    # Sequence match data without known-uids, and CONDSTORE beside QRESYNC.
    only = cmd("a SELECT INBOX (CONDSTORE QRESYNC (1 2 (1,3 5,9)))")
    assert only == c.Select(
        "INBOX",
        False,
        condstore=True,
        qresync=c.Qresync(1, 2, None, (seqs((1, 1), (3, 3)), seqs((5, 5), (9, 9)))),
    )


@pytest.mark.parametrize(
    "line",
    [
        "a SELECT INBOX (QRESYNC)",
        "a SELECT INBOX (QRESYNC (1))",
        "a SELECT INBOX (QRESYNC (0 1))",  # uidvalidity is nz-number
        "a SELECT INBOX (QRESYNC (1 0))",  # mod-sequence-value is not zero
        "a SELECT INBOX (QRESYNC (1 9223372036854775808))",  # above 2^63-1
        "a SELECT INBOX (QRESYNC (1 1 1:*))",  # "*" not allowed in known-uids
        "a SELECT INBOX (QRESYNC (1 1 $))",
        "a SELECT INBOX (QRESYNC (1 1 1:6 (1:* 1:6)))",
        "a SELECT INBOX (QRESYNC (1 1 1:6 (1:6 1:*)))",
        "a SELECT INBOX (QRESYNC (1 1) QRESYNC (1 1))",  # repeated
        "a SELECT INBOX (CONDSTORE CONDSTORE)",
        "a SELECT INBOX (FOO)",  # RFC 4466: unknown parameter
        "a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)",  # VANISHED needs UID FETCH
        "a UID FETCH 1 FLAGS (VANISHED)",  # and CHANGEDSINCE
        "a UID FETCH 1 FLAGS (CHANGEDSINCE 0)",
        "a UID FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)",
        "a UID FETCH 1 FLAGS (FOO 1)",
        "a STORE 1 (UNCHANGEDSINCE) +FLAGS (x)",
        "a STORE 1 (UNCHANGEDSINCE -1) +FLAGS (x)",
        'a SEARCH MODSEQ "/flags/\\\\Seen" mine 5',  # entry-type-req
        'a SEARCH MODSEQ "/notflags/x" all 5',
        'a SEARCH MODSEQ "/flags/" all 5',
    ],
)
def test_bad_forms(line: str) -> None:
    with pytest.raises(TaggedParseError):
        cmd(line)


def test_fetch_and_store_modifiers() -> None:
    fetch = cmd("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert fetch == c.Fetch(
        True, seqs((1, STAR)), (c.FetchAtt("FLAGS"),), changed_since=12345, vanished=True
    )
    plain = cmd("a FETCH 1:7 (UID MODSEQ) (changedsince 5)")
    assert isinstance(plain, c.Fetch) and plain.changed_since == 5 and not plain.vanished
    store = cmd("a STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)")
    assert store == c.Store(
        False, seqs((7, 7), (5, 5), (9, 9)), "add", True, ("\\Deleted",), unchanged_since=320162338
    )
    zero = cmd("a UID STORE 1 (UNCHANGEDSINCE 0) FLAGS ()")
    assert isinstance(zero, c.Store) and zero.unchanged_since == 0


def test_search_modseq_forms() -> None:
    assert cmd("a SEARCH MODSEQ 620162338") == c.Search(False, c.SearchKey("MODSEQ", (620162338,)))
    ext = cmd('a SEARCH OR NOT MODSEQ 720162338 LARGER 50000 MODSEQ "/flags/\\\\draft" all 0')
    assert isinstance(ext, c.Search)
    assert ext.key.args[1] == c.SearchKey("MODSEQ", (0, "/flags/\\draft", "all"))


# -- which commands switch CONDSTORE on (RFC 7162 3.1) -----------------------------


@pytest.mark.parametrize(
    ("line", "enables"),
    [
        ("a SELECT INBOX (CONDSTORE)", True),
        ("a SELECT INBOX", False),
        ("a STATUS INBOX (HIGHESTMODSEQ)", True),
        ("a STATUS INBOX (MESSAGES)", False),
        ("a FETCH 1 (MODSEQ)", True),
        ("a FETCH 1 (FLAGS) (CHANGEDSINCE 4)", True),
        ("a FETCH 1 (FLAGS)", False),
        ("a UID STORE 1 (UNCHANGEDSINCE 0) FLAGS ()", True),
        ("a STORE 1 FLAGS ()", False),
        ("a SEARCH NOT (MODSEQ 4)", True),
        ("a SEARCH ALL", False),
        ("a NOOP", False),
    ],
)
def test_condstore_enabling_commands(line: str, enables: bool) -> None:
    assert modseq.enables_condstore(cmd(line)) is enables


def test_enable_qresync_is_announced_once_authenticated() -> None:
    session = SessionState(Settings(1000, False, True), tls_active=True)
    assert "QRESYNC" not in session.capabilities()
    session.state = State.AUTHENTICATED
    assert {"CONDSTORE", "QRESYNC"} <= set(session.capabilities())


# -- UID-range arithmetic ------------------------------------------------------------


def test_uid_ranges_and_missing() -> None:
    assert modseq.uid_ranges(None, 10) == [(1, 10)]
    assert modseq.uid_ranges(None, 0) == []
    assert modseq.uid_ranges(seqs((5, STAR), (1, 2), (3, 3)), 8) == [(1, 3), (5, 8)]
    assert modseq.uid_ranges(seqs((20, 30)), 8) == []  # beyond UIDNEXT-1
    ranges = [(1, 10), (20, 4_000_000_000)]
    # Cost follows the UIDs present, not the size of the range.
    assert modseq.missing(ranges, [2, 3, 10, 25]) == [(1, 1), (4, 9), (20, 24), (26, 4_000_000_000)]
    assert modseq.above([(1, 3), (5, 9)], 6) == [(7, 9)]
    assert modseq.contains([(1, 3), (5, 9)], 5) and not modseq.contains([(1, 3), (5, 9)], 4)
    assert modseq.uids_to_ranges([9, 1, 2, 3, 7]) == [(1, 3), (7, 7), (9, 9)]
    assert modseq.vanished_lines([(1, 3), (7, 7)], earlier=True) == [
        b"* VANISHED (EARLIER) 1:3,7\r\n"
    ]
    many = modseq.vanished_lines([(n * 2, n * 2) for n in range(1, 1001)], earlier=False)
    assert [line[:16] for line in many] == [b"* VANISHED 2,4,6", b"* VANISHED 1002,"]


# -- sequence match data (RFC 7162 3.2.5.2) ------------------------------------------


def test_seq_match_bound_stops_at_the_first_mismatch() -> None:
    # The client knew UIDs 1..10 as messages 1..10; 4 and 8 were expunged since.
    now = [1, 2, 3, 5, 6, 7, 9, 10]

    def uid_of(seq: int) -> int:
        return now[seq - 1]

    pairs = (seqs((1, 1), (3, 3), (5, 5), (9, 9)), seqs((1, 1), (3, 3), (5, 5), (9, 9)))
    # 1->1 and 3->3 still hold; message 5 is now UID 6: the first mismatch.
    assert modseq.seq_match_bound(pairs, len(now), uid_of) == 3
    # A later pair that happens to match again does not count (and cannot
    # unless the client's data was wrong).
    assert modseq.seq_match_bound((seqs((1, 2)), seqs((1, 2))), len(now), uid_of) == 2
    # A message number beyond the mailbox ends the walk.
    assert modseq.seq_match_bound((seqs((3, 3), (20, 20)), seqs((3, 3), (30, 30))), 8, uid_of) == 3
    # Nothing matches: nothing is proven.
    assert modseq.seq_match_bound((seqs((1, 1)), seqs((2, 2))), 8, uid_of) == 0
    # What a fallback answer then reports: absent UIDs of known-uids above the bound.
    known = modseq.uid_ranges(seqs((1, 10)), 10)
    assert modseq.missing(modseq.above(known, 3), now) == [(4, 4), (8, 8)]


def test_seq_match_bound_with_huge_ranges_is_bounded_by_the_mailbox() -> None:
    pairs = (seqs((1, 4_000_000_000)), seqs((1, 4_000_000_000)))
    assert modseq.seq_match_bound(pairs, 3, lambda n: n) == 3


def test_seq_match_problems() -> None:
    assert modseq.seq_match_problem((seqs((1, 2)), seqs((1, 1)))) is not None  # lengths
    assert modseq.seq_match_problem((seqs((2, 2), (1, 1)), seqs((1, 2)))) is not None
    assert modseq.seq_match_problem((seqs((1, 1), (3, 4)), seqs((5, 5), (7, 8)))) is None


# -- the mailbox view -------------------------------------------------------------------


def test_view_reports_vanished_and_modseq_when_enabled() -> None:
    view = MailboxView(1, [10, 11, 12, 13])
    view.message_expunged(11)
    view.message_expunged(13)
    view.flags_changed(12, frozenset({"\\Seen"}), 77)
    out = view.flush(expunges_allowed=True, condstore=True, qresync=True)
    assert out == [b"* VANISHED 11,13\r\n", b"* 2 FETCH (UID 12 FLAGS (\\Seen) MODSEQ (77))\r\n"]
    assert view.uids.to_list() == [10, 12]
    # Without the extensions: EXPUNGE by number, no MODSEQ.
    view = MailboxView(1, [10, 11, 12])
    view.message_expunged(11)
    view.flags_changed(12, frozenset(), 78)
    assert view.flush(expunges_allowed=True) == [
        b"* 2 EXPUNGE\r\n",
        b"* 2 FETCH (UID 12 FLAGS ())\r\n",
    ]


def test_view_lowers_highestmodseq_while_an_expunge_waits() -> None:
    """RFC 7162 errata 1810: after a FETCH by number, the expunge (MODSEQ 40)
    must wait, but MODSEQ 41 was just reported: the client is told to
    resync from 39 should it disconnect before the VANISHED."""
    view = MailboxView(1, [10, 11, 12])
    view.message_expunged(11, 40)
    view.flags_changed(12, frozenset({"\\Seen"}), 41)
    out = view.flush(expunges_allowed=False, condstore=True, qresync=True)
    assert out == [
        b"* 3 FETCH (UID 12 FLAGS (\\Seen) MODSEQ (41))\r\n",
        b"* OK [HIGHESTMODSEQ 39] Expunges pending\r\n",
    ]
    assert view.flush(expunges_allowed=True, condstore=True, qresync=True) == [b"* VANISHED 11\r\n"]
    assert not view.has_pending
