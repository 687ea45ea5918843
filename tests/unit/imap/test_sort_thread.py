"""SORT and THREAD cores: base subjects (RFC 5256 2.1), i;unicode-casemap
(RFC 5051), sort order (RFC 5256 3, RFC 5957) and both threading
algorithms, including the THREAD responses of RFC 5256 4."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack import mime
from mailstack.imap import sort_keys, sorting, thread
from mailstack.imap.base_subject import extract
from mailstack.imap.collation import casemap
from mailstack.imap.sort import Sortable, order
from mailstack.store.records import MessageRecord

# -- base subject ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("foo", "foo", False),
        ("Re: foo", "foo", True),
        ("RE: re: Fwd: fw: foo", "foo", True),
        ("Re[2]: foo", "foo", True),
        ("Re [blob]: foo", "foo", True),
        ("[PATCH] foo", "foo", False),
        ("[PATCH 1/2] Re: [list] foo", "foo", True),
        ("[a] [b] Re: foo", "foo", True),
        ("foo (fwd)", "foo", True),
        ("foo (FWD) (fwd)  ", "foo", True),
        ("[fwd: foo]", "foo", True),
        ("[Fwd: Re: foo (fwd)]", "foo", True),
        ("Re: [fwd: [fwd: foo]]", "foo", True),
        ("[blob]", "[blob]", False),  # (4): removing the blob would leave nothing
        ("Re: [blob]", "[blob]", True),
        ("Ref: foo", "Ref: foo", False),  # "re" must be followed by WSP/blob and ":"
        ("  foo \t  bar  ", "foo bar", False),
        ("Re:\tfoo\r\n bar", "foo bar", True),
        ("", "", False),
        ("Re:", "", True),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert extract(subject) == (base, reply)


def test_base_subject_of_encoded_words_is_decoded_at_delivery() -> None:
    raw = (
        b"Subject: =?utf-8?q?Re=3A_=C3=A9t=C3=A9?= (fwd)\r\n"
        b"Date: Mon, 2 Mar 2026 09:00:00 +0100\r\n\r\nx"
    )
    keys = mime.analyze(raw).sort_keys
    assert keys is not None
    assert keys["subject"] == casemap("été") and keys["reply"] is True
    assert keys["date"] == 1772438400  # 08:00 UTC


def _parsed(parse: Any, value: str) -> tuple[Any, ...]:
    try:
        when = parse(value)
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        return ("error", type(exc))
    return ("date", when.replace(tzinfo=None), when.utcoffset())


@settings(max_examples=3000)
@given(
    st.sampled_from(["Mon, ", "Sun, ", "", "Xyz, ", "mon, "]),
    st.integers(0, 40).map(str) | st.integers(0, 9).map(lambda d: f"0{d}"),
    st.sampled_from(["Jan", "Feb", "Nov", "Dec", "nov", "Foo"]),
    st.sampled_from(["1999", "2026", "0000", "0026", "0068", "0069", "9999", "10000", "26"]),
    st.tuples(st.integers(0, 25), st.integers(0, 61), st.integers(0, 61)),
    st.sampled_from(["+", "-"]),
    st.tuples(st.integers(0, 25), st.sampled_from([0, 30, 59, 60, 99])),
    st.sampled_from(["", " (UTC)", "(UTC)", "  x", "\u2003(X)", "0"]),
)
def test_the_rfc5322_date_shortcut_reads_dates_as_the_email_package(
    day_name: str,
    day: str,
    month: str,
    year: str,
    clock: tuple[int, int, int],
    sign: str,
    zone: tuple[int, int],
    rest: str,
) -> None:
    value = (
        f"{day_name}{day} {month} {year} {clock[0]:02d}:{clock[1]:02d}:{clock[2]:02d} "
        f"{sign}{zone[0]:02d}{zone[1]:02d}{rest}"
    )
    assert _parsed(sort_keys._parse_date, value) == _parsed(parsedate_to_datetime, value)


def test_casemap_is_titlecase_then_nfkd() -> None:
    assert casemap("abc") == "ABC" == casemap("aBc")
    assert casemap("été") == unicodedata.normalize("NFKD", "ÉTÉ")
    assert casemap("ǆ") == unicodedata.normalize("NFKD", "ǅ")  # titlecase, not upper case
    assert casemap("ß") == "ß"  # no simple titlecase mapping
    assert casemap("ﬁ") == "fi"  # compatibility decomposition
    # Titlecase puts "_" after letters: "a_" sorts after "ab" (as "AB" < "A_").
    assert casemap("ab") < casemap("a_")


# -- sort keys derived at delivery ---------------------------------------------------


def keys_of(raw: bytes) -> dict[str, Any]:
    keys = mime.analyze(raw).sort_keys
    assert keys is not None
    return keys


def test_sort_keys_addresses_and_display_names() -> None:
    keys = keys_of(
        b"From: =?utf-8?q?Z=C3=B6e?= <zoe@example.test>\r\n"
        b"To: undisclosed:;, Bob <BOB@example.test>\r\n"
        b"Cc: carol@example.test\r\n"
        b"Message-ID: <m1@x>\r\n"
        b"In-Reply-To: <p1@x> <p2@x>\r\n"
        b"Date: garbage\r\n\r\nbody"
    )
    # A group counts as the first address, its name as the mailbox (as Dovecot).
    assert keys["from"] == "ZOE" and keys["to"] == "UNDISCLOSED" and keys["cc"] == "CAROL"
    assert keys["displayfrom"] == casemap("Zöe")
    assert keys["displayto"] == "UNDISCLOSED"
    assert keys["date"] is None
    assert keys["id"] == "<m1@x>" and keys["refs"] == ["<p1@x>"]
    bare = keys_of(b"From: zoe@example.test\r\nReferences: <a@x>\r\n <b@x>\r\n\r\n")
    assert bare["displayfrom"] == "ZOE@EXAMPLE.TEST" and bare["displayto"] == ""
    assert bare["refs"] == ["<a@x>", "<b@x>"] and bare["id"] is None


# -- SORT -------------------------------------------------------------------------


def item(number: int, *, arrival: float = 0, size: int = 0, **keys: Any) -> Sortable:
    return Sortable(number, number, arrival, size, keys)


def numbers(items: list[Sortable]) -> list[int]:
    return [i.number for i in items]


def test_sort_criteria_reverse_and_ties_in_mailbox_order() -> None:
    items = [
        item(1, arrival=30, size=10, subject="B", date=None),
        item(2, arrival=10, size=30, subject="A", date=100),
        item(3, arrival=20, size=10, subject="B", date=50),
        item(4, arrival=40, size=20, subject="A", date=100),
    ]
    assert numbers(order(items, [("ARRIVAL", False)])) == [2, 3, 1, 4]
    assert numbers(order(items, [("SIZE", False)])) == [1, 3, 4, 2]
    assert numbers(order(items, [("SIZE", True)])) == [2, 4, 1, 3]  # ties stay 1 before 3
    # DATE falls back to the internal date (message 1: 30).
    assert numbers(order(items, [("DATE", False)])) == [1, 3, 2, 4]
    assert numbers(order(items, [("SUBJECT", False)])) == [2, 4, 1, 3]
    assert numbers(order(items, [("SUBJECT", False), ("DATE", True)])) == [2, 4, 3, 1]
    assert numbers(order(items, [("SUBJECT", True), ("SIZE", False)])) == [1, 3, 4, 2]


def test_sort_missing_fields_sort_first() -> None:
    items = [item(1, **{"from": "ZED"}), item(2), item(3, **{"from": "ANN"})]
    assert numbers(order(items, [("FROM", False)])) == [2, 3, 1]
    assert numbers(order(items, [("DISPLAYFROM", False)])) == [1, 2, 3]


# -- THREAD -------------------------------------------------------------------------


def message(
    number: int, date: float, subject: str = "", msgid: str | None = None, *refs: str
) -> Sortable:
    base, reply = extract(subject)
    keys = {"subject": casemap(base), "reply": reply, "date": date, "id": msgid, "refs": list(refs)}
    return Sortable(number, number, date, 0, keys)


def test_references_rfc5256_example() -> None:
    # RFC 5256 4: "* THREAD (2)(3 6 (4 23)(44 7 96))"
    items = [
        message(2, 1, "other", "<2@x>"),
        message(3, 2, "topic", "<3@x>"),
        message(6, 3, "Re: topic", "<6@x>", "<3@x>"),
        message(4, 4, "Re: topic", "<4@x>", "<3@x>", "<6@x>"),
        message(23, 5, "Re: topic", "<23@x>", "<3@x>", "<6@x>", "<4@x>"),
        message(44, 6, "Re: topic", "<44@x>", "<3@x>", "<6@x>"),
        message(7, 7, "Re: topic", "<7@x>", "<3@x>", "<6@x>", "<44@x>"),
        message(96, 8, "Re: topic", "<96@x>", "<44@x>", "<7@x>"),
    ]
    assert thread.serialize(thread.references(items)) == "(2)(3 6 (4 23)(44 7 96))"


def test_ordered_subject_rfc5256_example() -> None:
    # The ORDEREDSUBJECT response of RFC 5256 4, rebuilt from threads whose
    # roots and children were sent in the order the response lists them.
    expected = (
        "(166)(167)(168)(169)(172)(170)(171)(173)(174 (175)(176)(178)(181)(180))"
        "(179)(177 (183)(182)(188)(184)(185)(186)(187)(189))(190)(191)(192)(193)"
        "(194 195)(196 (197)(198))(199)(200 202)(201)(203)(204)(205)(206 207)(208)"
    )
    groups: list[str] = []
    depth = 0
    for char in expected:
        if char == "(" and depth == 0:
            groups.append("")
        depth += {"(": 1, ")": -1}.get(char, 0)
        groups[-1] += char
    assert len(groups) == 25
    items: list[Sortable] = []
    for t, group in enumerate(groups):
        members = [int(n) for n in group.replace("(", " ").replace(")", " ").split()]
        for k, number in enumerate(members):
            subject = f"thread {t}" if k == 0 else f"Re: [list] thread {t}"
            items.append(message(number, t * 100 + k, subject))
    items.sort(key=lambda i: i.number)  # mailbox order differs from date order
    assert thread.serialize(thread.ordered_subject(items)) == expected


def test_references_missing_parents_become_dummies() -> None:
    # Two replies to a message that is not in the mailbox stay together
    # under a dummy; a lone one is promoted.
    items = [
        message(1, 1, "Re: gone", "<1@x>", "<gone@x>"),
        message(2, 2, "Re: gone", "<2@x>", "<gone@x>"),
        message(3, 3, "Re: alone", "<3@x>", "<lost@x>"),
    ]
    assert thread.serialize(thread.references(items)) == "((1)(2))(3)"


def test_references_dummy_in_the_middle_is_removed() -> None:
    items = [
        message(1, 1, "a", "<1@x>"),
        message(2, 2, "Re: a", "<2@x>", "<1@x>", "<missing@x>"),
        message(3, 3, "Re: a", "<3@x>", "<1@x>", "<missing@x>"),
    ]
    assert thread.serialize(thread.references(items)) == "(1 (2)(3))"


def test_references_merges_by_subject() -> None:
    items = [
        message(1, 1, "lunch", "<1@x>"),
        message(2, 2, "Re: lunch", "<2@x>"),  # no References: a reply by subject
        message(3, 3, "plans", "<3@x>"),
        message(4, 4, "plans", "<4@x>"),  # two originals: a dummy above both
        message(5, 5, "", "<5@x>"),  # empty subjects are never merged
        message(6, 6, "", "<6@x>"),
    ]
    assert thread.serialize(thread.references(items)) == "(1 2)((3)(4))(5)(6)"


def test_references_reply_found_first_still_goes_below() -> None:
    items = [message(1, 1, "Re: news", "<1@x>"), message(2, 2, "news", "<2@x>")]
    assert thread.serialize(thread.references(items)) == "(2 1)"


def test_references_loops_duplicates_and_missing_ids() -> None:
    items = [
        message(1, 1, "x", "<a@x>", "<b@x>"),
        message(2, 2, "y", "<b@x>", "<a@x>"),  # would make a loop: stays a root
        message(3, 3, "z", "<a@x>"),  # duplicate Message-ID: a message of its own
        message(4, 4, "w", None, "<b@x>"),
    ]
    # 1 under its reference <b@x> (message 2); 2's reference <a@x> is 1
    # itself, a loop, so 2 stays a root; 4 also replies to <b@x>.
    assert thread.serialize(thread.references(items)) == "(2 (1)(4))(3)"


def test_references_deep_chain_does_not_recurse() -> None:
    items = [message(1, 0, "deep", "<0@x>")]
    for n in range(1, 5000):
        items.append(message(n + 1, n, "Re: deep", f"<{n}@x>", f"<{n - 1}@x>"))
    text = thread.serialize(thread.references(items))
    assert text == "(" + " ".join(str(n) for n in range(1, 5001)) + ")"


def test_thread_empty() -> None:
    assert thread.serialize(thread.references([])) == ""
    assert thread.serialize(thread.ordered_subject([])) == ""


def test_messages_stored_before_sort_keys_get_them_from_stored_fields() -> None:
    raw = b"From: =?utf-8?q?=C3=84nne?= <a@x>\r\nSubject: Fwd: plan\r\nMessage-ID: <p@x>\r\n\r\nx"
    analysis = mime.analyze(raw)
    old = MessageRecord(
        id=99,
        mailbox_id=1,
        uid=1,
        modseq=1,
        flags=frozenset(),
        internal_date=datetime(2026, 1, 1, tzinfo=UTC),
        size=len(raw),
        content_id=1,
        envelope=analysis.envelope,
        bodystructure=analysis.bodystructure,
        headers=analysis.headers,
        sort_keys=None,  # stored before revision 0003_imapext
    )
    assert sorting.keys_of(old) == analysis.sort_keys
    assert sorting.keys_of(old)["displayfrom"] == casemap("Änne")


def test_references_own_header_outranks_anothers_guess() -> None:
    # Message 2 claims <b@x> replies to <a@x> (message 1); message 3 is
    # <b@x> and names no parent: it is a root (as in Dovecot), 2 below it.
    items = [
        message(1, 1, "one", "<a@x>"),
        message(2, 2, "two", "<c@x>", "<a@x>", "<b@x>"),
        message(3, 3, "three", "<b@x>"),
    ]
    assert thread.serialize(thread.references(items)) == "(1)(3 2)"
    # A parent the message names itself replaces the guessed one.
    items[2] = message(3, 3, "three", "<b@x>", "<d@x>")
    items.append(message(4, 4, "four", "<d@x>"))
    assert thread.serialize(thread.references(items)) == "(1)(4 3 2)"
